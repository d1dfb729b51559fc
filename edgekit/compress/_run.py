"""Run a recipe on a model and measure the reference and the result the same way.

Both models are converted to the recipe's ``measure`` artifact (TFLite fp32 by default,
full-int8 for recipes that end in quantization-aware training), evaluated in LiteRT on the
held-out test split, sized raw and gzipped, and timed side by side in alternating rounds.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._io import staged_dir, write_bytes_atomic, write_json_atomic
from edgekit.compress._steps import StepContext, get_step
from edgekit.compress.recipe import Recipe
from edgekit.data import Dataset
from edgekit.errors import BadInputError

log = logging.getLogger(__name__)

REPORT = "compress.json"


@dataclass
class CompressRequest:
    """What ``edgekit compress`` was asked to do."""

    recipe: Recipe
    out: Path
    seed: int = 0
    threads: int | None = None
    runs: int = 100


def weight_sparsity(model: Any) -> float:
    """Share of exact zeros over the kernels of ``model`` (see :func:`pruning.weight_sparsity`)."""
    from edgekit.compress.pruning import weight_sparsity as sparsity_by_layer

    return float(sparsity_by_layer(model)["overall"])


def gzip_size(path: Path) -> int:
    """Bytes of ``path`` after gzip at the maximum level (what a download or OTA ships)."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


def run_recipe(
    model: Any, recipe: Recipe, ctx: StepContext, on_step: Callable[[int, str], None] | None = None
) -> tuple[Any, list[dict[str, Any]]]:
    """Apply every step of ``recipe`` in order.

    Returns:
        The compressed model and one record per step (type, options, seconds, state keys
        that the step added or changed).
    """
    records = []
    for i, step in enumerate(recipe.steps, start=1):
        if on_step is not None:
            on_step(i, step.type)
        before = dict(ctx.state)
        t0 = time.perf_counter()
        model = get_step(step.type).fn(model, ctx, **step.options)
        changed = {k: v for k, v in ctx.state.items() if before.get(k, object()) != v}
        records.append(
            {
                "type": step.type,
                "options": step.options,
                "seconds": round(time.perf_counter() - t0, 1),
                "state": _jsonable(changed),
            }
        )
    return model, records


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)


def _export_model(model: Any, fmt: str) -> Any:
    """The Keras model the ``fmt`` converter takes: the model itself, or its float twin (a
    binarized model always; a quantization-aware one unless the converter reads fake-quant
    ranges), as deploy does (see :mod:`edgekit.compress.twin`)."""
    from edgekit.compress.twin import model_for_converter
    from edgekit.converters import get_converter

    return model_for_converter(model, get_converter(fmt).takes_fake_quant)


def measure_models(
    models: dict[str, Any],
    data: Dataset,
    fmt: str,
    out_dir: Path,
    threads: int | None,
    runs: int,
    say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Convert each model to ``fmt``, evaluate it on the test split and time them together."""
    from edgekit.converters import ConvertOptions, get_converter
    from edgekit.measure import measure_side_by_side, open_runner
    from edgekit.measure._validate import accuracy
    from edgekit.train import evaluate_probs

    converter = get_converter(fmt)
    out: dict[str, dict[str, Any]] = {}
    runners = {}
    for key, model in models.items():
        say(f"converting the {key} to {fmt}")
        art = converter.convert(model, out_dir, ConvertOptions(stem=key, calibration=data.x_train))
        runner = open_runner(art.runtime, art.path, threads=threads)
        probs = runner.predict(data.x_test)
        keras_acc = accuracy(evaluate_probs(model, data.x_test), data.y_test)
        out[key] = {
            "format": fmt,
            "artifact": art.path.name,
            "accuracy": round(accuracy(probs, data.y_test), 6),
            "keras_accuracy": round(keras_acc, 6),
            "size_bytes": art.path.stat().st_size,
            "size_gzip_bytes": gzip_size(art.path),
        }
        runners[key] = runner
    say(f"timing {' and '.join(models)} side by side ({runs} runs each)")
    stats = measure_side_by_side(runners, data.x_test[:1], runs=runs, warmup=10, rounds=5)
    for key, s in stats.items():
        out[key]["latency_ms"] = {k: round(v, 4) for k, v in s.as_dict().items() if k in _LAT}
    return out


_LAT = ("p50", "p90", "mean", "min")


def compress(
    model: Any,
    model_label: str,
    data: Dataset,
    req: CompressRequest,
    ctx: StepContext,
) -> dict[str, Any]:
    """Run ``req.recipe`` on ``model``; write the result model, artifacts and report.

    The output folder is staged and renamed at the end: an interrupted run leaves nothing.

    Returns:
        The report: recipe, reference and result measurements, steps, notes.
    """
    from edgekit.models import count_model
    from edgekit.models._io import save_keras_model

    classes = int(model.outputs[0].shape[-1])
    if classes != data.num_classes:
        raise BadInputError(
            f"model has {classes} outputs but the data has {data.num_classes} classes; "
            "pass --data with the data set the model was trained on"
        )
    t0 = time.perf_counter()
    out = Path(req.out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / REPORT).is_file())):
        raise BadInputError(
            f"--out '{out}' exists and was not written by edgekit compress "
            f"(no {REPORT} in it); choose a new folder"
        )
    with staged_dir(out, replace_if=REPORT) as stage:
        reference_cost = count_model(model)
        reference_sparsity = weight_sparsity(model)
        ctx.say(f"recipe {req.recipe.name}: {len(req.recipe.steps)} step(s)")
        result, records = run_recipe(
            model, req.recipe, ctx, on_step=lambda i, t: ctx.say(f"step {i}: {t}")
        )
        model_path = save_keras_model(result, stage / f"{model_label}_{req.recipe.name}.keras")
        measured = measure_models(
            {
                "reference": _export_model(model, req.recipe.measure),
                "result": _export_model(result, req.recipe.measure),
            },
            data,
            req.recipe.measure,
            stage,
            req.threads,
            req.runs,
            ctx.say,
        )  # fmt: skip
        result_cost = count_model(result)
        measured["reference"].update(
            sparsity=round(reference_sparsity, 6),
            macs=int(reference_cost.macs),
            params=int(reference_cost.params),
        )
        measured["result"].update(
            sparsity=round(weight_sparsity(result), 6),
            macs=int(result_cost.macs),
            params=int(result_cost.params),
        )
        ref, res = measured["reference"], measured["result"]
        report = {
            "recipe": req.recipe.as_dict(),
            "model": model_label,
            "data": data.summary(),
            "reference": ref,
            "result": {**res, "model": str(Path(req.out).absolute() / model_path.name)},
            "delta": {
                "accuracy_points": round(100 * (res["accuracy"] - ref["accuracy"]), 3),
                "size_gzip_ratio": round(res["size_gzip_bytes"] / ref["size_gzip_bytes"], 4),
                "size_ratio": round(res["size_bytes"] / ref["size_bytes"], 4),
                "p50_ratio": round(res["latency_ms"]["p50"] / ref["latency_ms"]["p50"], 4),
            },
            "steps": records,
            "state": _jsonable(ctx.state),
            "notes": list(ctx.notes),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        write_bytes_atomic(stage / "recipe.toml", _recipe_toml(req.recipe).encode("utf-8"))
        write_json_atomic(stage / REPORT, report)
    return report


def _recipe_toml(recipe: Recipe) -> str:
    """The recipe with every option spelled out (defaults included): reproducible as is."""
    lines = [f"description = {_toml(recipe.description)}", f"measure = {_toml(recipe.measure)}"]
    for step in recipe.steps:
        lines += ["", "[[step]]", f"type = {_toml(step.type)}"]
        lines += [f"{k} = {_toml(v)}" for k, v in step.options.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
