"""The NetAdapt report and chart: accuracy against latency (or the primary resource) for every
iteration, the reference, the result and the width-multiplier baseline."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from edgekit._io import write_bytes_atomic
from edgekit.search._options import CHART
from edgekit.search._resources import get_resource


def _x_of(point: dict[str, Any], axis: str, final: bool = False) -> float | None:
    """Where ``point`` sits on ``axis``. An iteration's latency is what the search measured
    (else predicted) then; ``final`` points (reference, result, width baseline) sit at
    ``latency_ms``, which the final side-by-side timing overwrites, as the report does."""
    if axis == "latency":
        keys = ("latency_ms_measured", "latency_ms_predicted", "latency_ms")
        for key in ("latency_ms", *keys) if final else keys:
            if point.get(key) is not None:
                return float(point[key])
        return None
    for key in ("resources", "values"):
        if axis in (point.get(key) or {}):
            return float(point[key][axis])
    value = point.get({"macs": "macs", "size": "size_bytes"}.get(axis, axis))
    return None if value is None else float(value)


def chart_axis(report: dict[str, Any]) -> str:
    """``latency`` when the reference has a latency (predicted or measured), else the
    primary resource."""
    if (report.get("reference") or {}).get("latency_ms") is not None:
        return "latency"
    return str(report["resources"][0])


def write_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Write the accuracy-vs-resource chart of a NetAdapt report as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    axis = chart_axis(report)
    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ref, result = report.get("reference") or {}, report.get("result") or {}
    chain = [(ref, ref.get("val_accuracy"))] + [
        (it, it.get("accuracy")) for it in report.get("iterations", [])
    ]
    xs = [_x_of(p, axis) for p, _ in chain]
    pts = [(x, y) for x, (_, y) in zip(xs, chain, strict=True) if x is not None and y is not None]
    if pts:
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "o-",
            color="tab:blue",
            markersize=4,
            label="NetAdapt iterations (val. accuracy after short fine-tuning)",
        )
    for point, style, label in (
        (ref, "s", "reference (test accuracy)"),
        (result, "*", "NetAdapt result (test accuracy)"),
    ):
        x = _x_of(point, axis, final=True) if point else None
        if x is not None and point.get("accuracy") is not None:
            ax.plot([x], [point["accuracy"]], style, markersize=11, label=label)
    base = [
        (_x_of(e, axis, final=True), e.get("accuracy"), e.get("width"))
        for e in report.get("width_baseline", [])
    ]
    base = [b for b in base if b[0] is not None and b[1] is not None]
    if base:
        base.sort()
        ax.plot(
            [b[0] for b in base],
            [b[1] for b in base],
            "d--",
            color="tab:gray",
            label="width multipliers (test accuracy)",
        )
        for x, y, w in base:
            ax.annotate(f"{w:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for name, b in (report.get("budget") or {}).items():
        if name == axis:
            ax.axvline(b["value"], color="tab:red", linestyle=":", label=f"budget {b['text']}")
    unit = {
        "latency": "latency (ms; measured where available, else predicted)",
        "macs": "MACs",
        "size": "weights (bytes)",
    }
    ax.set_xlabel(unit.get(axis, axis))
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"NetAdapt: {report.get('status')}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, buf.getvalue())


def netadapt_report(state: dict[str, Any], out: Path) -> dict[str, Any]:
    """The report of a run from its state: reference, result, budget, iterations, baseline.

    ``reference`` and ``result`` each give ``latency_ms`` (measured where the target can be
    measured here, else predicted), ``latency_ms_predicted``, ``latency_ms_measured``,
    ``accuracy`` (test split), ``macs``, ``params``, ``size_bytes`` and ``model`` (path).
    """
    opts = state["options"]
    budget = {}
    for b in state["budgets"]:
        res = get_resource(b["resource"])
        reached = (state.get("result") or {}).get("values", {}).get(b["resource"])
        budget[b["resource"]] = {
            "text": b["text"],
            "value": round(float(b["value"]), 6),
            "unit": res.unit,
            "reached": reached,
            "met": None if reached is None else bool(reached <= b["value"] * (1 + 1e-9)),
        }
        stats = (state.get("result") or {}).get("latency")
        if b["resource"] == "latency" and stats and reached is not None:
            # Measured latency is noisy: say how much, and whether the budget is met within it.
            noise = (stats["p90"] - stats["p50"]) / stats["p50"] if stats["p50"] > 0 else 0.0
            budget["latency"]["noise"] = round(noise, 4)
            budget["latency"]["met_within_noise"] = bool(reached <= b["value"] * (1 + noise))
    return {
        "status": state["status"],
        "message": _message(state, budget),
        "verdict": _verdict(budget),
        "resources": list(opts["resources"]),
        "latency_source": (
            "profile" if state["profile"] else ("measured" if state["can_measure"] else None)
        ),
        "profile": state.get("profile_name"),
        "target": state["target"],
        "device": state.get("device"),
        "latency_scale": state.get("latency_scale"),
        "side_by_side": state.get("side_by_side"),
        "notes": state.get("notes", []),
        "precision": state["precision"],
        "budget": budget,
        "reference": state["reference"],
        "result": state["result"],
        "iterations": state["history"],
        "width_baseline": state["width_baseline"],
        "width_baseline_note": _baseline_note(state),
        "options": opts,
        "data": state["data"],
        "zoo": state["zoo"],
        "executor": state.get("executor"),
        "seconds": state["seconds"],
        "out_dir": str(out.absolute()),
        "chart": str((out / CHART).absolute()),
    }


def _met(entry: dict[str, Any]) -> bool | None:
    """A budget met, or (latency) met within the result's timing noise."""
    if entry.get("met") is None:
        return None
    return bool(entry["met"] or entry.get("met_within_noise"))


def _verdict(budget: dict[str, Any]) -> str:
    """One line: each budget, what the result reached (after the final timing) and whether
    that meets it."""
    parts = []
    for name, b in budget.items():
        res = get_resource(name)
        if b.get("reached") is None:
            parts.append(f"{name} budget {b['text']} ({res.format(b['value'])}): no result")
            continue
        if b["met"]:
            word = "met"
        elif b.get("met_within_noise"):
            word = f"met within its timing noise ({b['noise']:.1%})"
        else:
            word = "NOT met"
        parts.append(
            f"{name} {res.format(b['reached'])} for a budget of {b['text']} "
            f"({res.format(b['value'])}): {word}"
        )
    return "; ".join(parts)


def _message(state: dict[str, Any], budget: dict[str, Any]) -> str:
    """The search's own message, corrected when the final timing (after the search stopped
    on a met budget) reads the result over it."""
    message = str(state["message"])
    if state["status"] == "budget_met" and any(_met(b) is False for b in budget.values()):
        message += (
            "; but the final side-by-side timing reads the result over the budget (the "
            "machine's speed changed since the search confirmed it): re-measure it with "
            "`edgekit bench`"
        )
    return message


def _baseline_note(state: dict[str, Any]) -> str | None:
    """Why a run has no width-multiplier baseline, or None when it has (or will have) one."""
    if state["width_baseline"] or state["options"].get("baseline"):
        return None
    if not state.get("zoo"):
        return (
            "no width-multiplier baseline: the reference is not a zoo model, so there is no "
            "architecture to rebuild at other widths (search a zoo model with --model NAME)"
        )
    return "no width-multiplier baseline: --no-baseline"
