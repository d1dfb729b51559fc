"""How well a latency look-up table predicts whole MobileNets: predicted vs measured p50.

For MobileNet v1 and v2 at ten width multipliers each (half of them between the widths the
table was built on, so their layers are interpolated and they were not among the models
the table's calibration scale was fitted on), at the profile's input size: predict the
latency from the profile, convert the model (int8: full-integer, calibrated on the digits)
and time it with LiteRT at the profile's thread count, all models side by side in
alternating rounds, each warm when timed (edgekit.measure.lut.measure_alternating, the
loop the profile's entries were timed with). Prints the table, the share of models within
10% of the measured p50 and the Spearman rank correlation, and writes them to
benchmarks/RESULTS.md.

    python benchmarks/lut_accuracy.py [--profile NAME|PATH]          # a built profile
    python benchmarks/lut_accuracy.py --fresh [--grid-widths ...]     # build one in this run
    python benchmarks/lut_accuracy.py --profile litert_x86_avx512_int8_176 \
        --widths 0.25,0.3,0.4,0.5,0.6,0.75,0.9,1.0 --section lut_accuracy_176

A profile predicts the machine as it was when the profile was built; a VM whose host gets
busier runs everything slower. The report shows how much slower or faster the models that
were timed both at build time and now ran. ``--fresh`` removes that drift: it builds the
table in this run, timing its micro-models in the same rounds as the models (about 10 min).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

DEFAULT_PROFILE = "litert_x86_avx512_int8"
MODELS = ("mobilenet_v1", "mobilenet_v2")
WIDTHS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.2, 1.4)
GRID_WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.4)
TOLERANCE = 0.10


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _against_profile(args: argparse.Namespace, specs: list[tuple[str, float]]) -> dict[str, Any]:
    """Predict from a built profile; convert and time the models now."""
    import numpy as np

    from edgekit.converters import ConvertOptions, get_converter
    from edgekit.data import load_dataset
    from edgekit.measure import open_runner
    from edgekit.measure.lut import (
        cpu_counters,
        load_profile,
        measure_alternating,
        other_load,
        predict_latency,
    )
    from edgekit.models import create

    profile = load_profile(args.profile)
    size = int(profile["input_size"])
    threads = args.threads or profile["device"].get("threads")
    if threads != profile["device"].get("threads"):
        _say(
            f"warning: timing with {threads} threads, the profile has {profile['device']['threads']}"
        )
    fmt = "tflite_int8" if profile["precision"] == "int8" else "tflite_fp32"
    data = load_dataset("digits", (size, size, 3))
    work = Path(tempfile.mkdtemp(prefix="edgekit-lut-accuracy-"))
    rows, runners = [], {}
    t0 = time.perf_counter()
    for i, (name, width) in enumerate(specs):
        model = create(name, input_shape=(size, size, 3), classes=args.classes, width=width)
        pred = predict_latency(model, profile)
        opts = ConvertOptions(stem=f"{name}_{width}", calibration=data.x_train[:64])
        art = get_converter(fmt).convert(model, work, opts)
        label = f"{name}@{width:g}"
        runners[label] = (open_runner("litert", art.path, threads=threads), data.x_test[:1])
        rows.append(_row(name, width, model, pred))
        _say(
            f"  [{i + 1}/{len(specs)}] {label}: predicted {pred.latency_ms:.3f} ms "
            f"({len(pred.interpolated)}/{len(pred.per_layer)} ops interpolated), "
            f"{time.perf_counter() - t0:.0f} s"
        )
    _say(f"timing {len(runners)} models side by side ...")
    time.sleep(1.0)  # let the converter's thread pools go idle
    before = cpu_counters()
    try:
        measured = measure_alternating(
            runners, runs=args.runs, rounds=args.rounds, warmup_ms=args.warmup_ms
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    busy = other_load(before, cpu_counters())
    for r in rows:
        r["measured"] = measured[r["label"]]
    # The models the profile was calibrated on were timed when it was built: how much
    # longer do they run now? (A diagnostic; predictions are not adjusted by it.)
    then = {m["model"]: m["measured_ms"] for m in profile.get("calibration", {}).get("models", [])}
    ratios = [r["measured"] / then[r["label"]] for r in rows if r["label"] in then]
    drift = (float(np.median(ratios)), len(ratios)) if ratios else None
    return {"profile": profile, "rows": rows, "busy": busy, "threads": threads, "drift": drift}


def _fresh(args: argparse.Namespace, specs: list[tuple[str, float]]) -> dict[str, Any]:
    """Build a profile in this run, the benchmark's models timed in the same rounds."""
    from edgekit.measure.lut import build_lut, predict_latency, zoo_grid
    from edgekit.models import create

    grid_widths = [float(w) for w in args.grid_widths.split(",")]
    models = args.models.split(",")
    size, threads = args.input_size, args.threads or 2
    references: dict[str, Any] = {}
    _say(f"deriving the grid: {', '.join(models)} at widths {args.grid_widths}")
    keys = zoo_grid(models, grid_widths, size, "int8", [args.classes], references)
    for name, width in specs:
        label = f"{name}@{width:g}"
        if label not in references:
            references[label] = create(
                name, input_shape=(size, size, 3), classes=args.classes, width=width
            )
    held_out = {f"{n}@{w:g}" for n, w in specs if w not in grid_widths}
    _say(f"{len(keys)} layer configurations and {len(references)} whole models; converting ...")
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            _say(f"  {stage} {done}/{total} ({time.perf_counter() - t0:.0f} s)")

    profile = build_lut(
        keys,
        "int8",
        threads,
        args.runs,
        rounds=args.rounds,
        warmup_ms=args.warmup_ms,
        input_size=size,
        grid={"models": models, "widths": grid_widths, "classes": [args.classes]},
        references=references,
        held_out=held_out,
        progress=progress,
    )
    profile["name"] = "built in this run (--fresh)"
    timed = {m["model"]: m for m in profile["calibration"]["models"]}
    rows = []
    for name, width in specs:
        model = create(name, input_shape=(size, size, 3), classes=args.classes, width=width)
        row = _row(name, width, model, predict_latency(model, profile))
        row["measured"] = timed[row["label"]]["measured_ms"]
        rows.append(row)
    busy = profile["built"].get("other_load")
    return {"profile": profile, "rows": rows, "busy": busy, "threads": threads, "drift": None}


def _row(name: str, width: float, model: Any, pred: Any) -> dict[str, Any]:
    from edgekit.models import count_model

    return {
        "label": f"{name}@{width:g}",
        "model": name,
        "width": width,
        "macs": count_model(model).macs,
        "predicted": pred.latency_ms,
        "raw": pred.overhead_ms + (pred.latency_ms - pred.overhead_ms) / pred.scale,
        "interpolated": len(pred.interpolated),
        "ops": len(pred.per_layer),
    }


def _report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    import numpy as np
    from scipy.stats import spearmanr

    profile, rows = result["profile"], result["rows"]
    grid_widths = {float(w) for w in profile.get("grid", {}).get("widths", [])}
    for r in rows:
        r["error"] = r["predicted"] / r["measured"] - 1
        r["raw_error"] = r["raw"] / r["measured"] - 1
        r["in_grid"] = r["width"] in grid_widths
    errors = np.array([r["error"] for r in rows])
    raw_errors = np.array([r["raw_error"] for r in rows])
    off = np.array([r["error"] for r in rows if not r["in_grid"]])
    within = float(np.mean(np.abs(errors) <= TOLERANCE))
    rho = float(spearmanr([r["predicted"] for r in rows], [r["measured"] for r in rows])[0])
    dev, size = profile["device"], profile["input_size"]
    rt = dev.get("runtime", {})
    mode = (
        "built in this run (`--fresh`): its micro-models were timed in the same rounds as "
        "the models below"
        if args.fresh
        else f"`{profile['name']}`, built {profile.get('built', {}).get('date', '?')}"
    )
    lines = [
        f"## {args.section}: look-up-table predictions vs measured latency",
        "",
        f"Profile {mode} ({profile['precision']}, {len(profile['entries'])} entries, "
        f"{dev.get('cpu')}, {dev.get('threads')} threads, {rt.get('package')} "
        f"{rt.get('version')}, calibration scale {profile.get('calibration', {}).get('scale')}). "
        f"Models: {', '.join(args.models.split(','))} at {size}x{size}x3, {args.classes} "
        f"classes, LiteRT {profile['precision']}, {result['threads']} threads; measured p50: "
        f"median of the p50s of {args.rounds} alternating rounds, {args.runs} runs in all, each "
        f"model warm ({args.warmup_ms:g} ms of untimed runs before its timed runs in every "
        "round). The profile's grid widths are "
        f"{', '.join(f'{w:g}' for w in sorted(grid_widths)) or 'unknown'}; the layers of the "
        "other widths are interpolated, and those models were not among the ones the "
        f"calibration scale was fitted on. Host: {host_line()}.",
        "",
        "| model | width | in grid | MMACs | interpolated ops | sum of entries ms | "
        "predicted ms | measured p50 ms | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['width']:g} | {'yes' if r['in_grid'] else 'no'} | "
            f"{r['macs'] / 1e6:.1f} | {r['interpolated']}/{r['ops']} | {r['raw']:.3f} | "
            f"{r['predicted']:.3f} | {r['measured']:.3f} | {r['error']:+.1%} |"
        )
    n_off = len(off)
    lines += [
        "",
        f"**Within {TOLERANCE:.0%} of the measured p50: {within:.0%} of {len(rows)} models** "
        f"(target >= 90%); **Spearman rank correlation: {rho:.3f}** (target >= 0.9); "
        f"mean |error| {np.mean(np.abs(errors)):.1%}, max |error| {np.max(np.abs(errors)):.1%}, "
        f"mean error {np.mean(errors):+.1%}.",
        "",
        f"Widths outside the grid only ({n_off} model{'' if n_off == 1 else 's'}): "
        + (
            f"{np.mean(np.abs(off) <= TOLERANCE):.0%} within {TOLERANCE:.0%}, "
            f"max |error| {np.max(np.abs(off)):.1%}. "
            if n_off
            else "none. "
        )
        + "Plain sums (overhead + sum of entries, no calibration scale): "
        f"{np.mean(np.abs(raw_errors) <= TOLERANCE):.0%} within {TOLERANCE:.0%}, "
        f"mean error {np.mean(raw_errors):+.1%}, max |error| {np.max(np.abs(raw_errors)):.1%}.",
        "",
        _conditions(profile, result),
    ]
    return "\n".join(lines)


def _conditions(profile: dict[str, Any], result: dict[str, Any]) -> str:
    busy, built = result["busy"], profile.get("built", {}).get("other_load")
    text = "Conditions: other processes used " + (
        "an unknown share" if busy is None else f"{busy:.0%}"
    )
    text += " of the CPUs while the models were timed"
    if result["drift"] is not None:
        ratio, n = result["drift"]
        text += (
            f" ({'unknown' if built is None else f'{built:.0%}'} while the profile was "
            f"built); the {n} model{'' if n == 1 else 's'} timed both then and now ran "
            f"{ratio:.3f}x as long now (median)"
        )
    return text + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help="shipped profile name or .json path")
    ap.add_argument("--fresh", action="store_true", help="build the profile in this run")
    ap.add_argument("--grid-widths", default=",".join(f"{w:g}" for w in GRID_WIDTHS))
    ap.add_argument("--input-size", type=int, default=128, help="--fresh only")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--widths", default=",".join(f"{w:g}" for w in WIDTHS))
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="default: the profile's (2)")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per model")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    ap.add_argument("--warmup-ms", type=float, default=10.0, help="warm-up per model and round")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    ap.add_argument(
        "--section", default="lut_accuracy", help="RESULTS.md section to write (one per table)"
    )
    args = ap.parse_args()

    from edgekit.measure.lut import BUSY_WARNING

    specs = [(m, float(w)) for m in args.models.split(",") for w in args.widths.split(",")]
    result = _fresh(args, specs) if args.fresh else _against_profile(args, specs)
    busy = result["busy"]
    if busy is not None and busy > BUSY_WARNING:
        _say(f"warning: other processes kept {busy:.0%} of the CPUs busy while timing")
    text = _report(args, result)
    print(text)
    if not args.no_write:
        write_section(args.section, text)


if __name__ == "__main__":
    main()
