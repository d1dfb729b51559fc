"""How well a latency look-up table predicts whole MobileNets: predicted vs measured p50.

For MobileNet v1 and v2 at ten width multipliers each (half of them between the widths the
table was built on, so their layers are interpolated), at the profile's input size:
predict the latency from the profile, convert the model (int8: full-integer, calibrated on
the digits) and time it with LiteRT at the profile's thread count, all models side by side
in alternating rounds. Prints the table, the fraction of models within 10% of the measured
p50, and the Spearman rank correlation; writes them to benchmarks/RESULTS.md.

The models are timed with the same loop the profile's micro-models were timed with
(edgekit.measure.lut.measure_alternating): alternating rounds, each model warm when timed.

    python benchmarks/lut_accuracy.py [--profile NAME|PATH] [--runs 300] [--rounds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

DEFAULT_PROFILE = "litert_x86_avx512_int8"
MODELS = ("mobilenet_v1", "mobilenet_v2")
WIDTHS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.2, 1.4)
TOLERANCE = 0.10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help="shipped profile name or .json path")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--widths", default=",".join(str(w) for w in WIDTHS))
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="default: the profile's")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per model")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    ap.add_argument("--warmup-ms", type=float, default=10.0, help="warm-up per model and round")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()

    import numpy as np
    from scipy.stats import spearmanr

    from edgekit.converters import ConvertOptions, get_converter
    from edgekit.data import load_dataset
    from edgekit.measure import open_runner
    from edgekit.measure.lut import load_profile, measure_alternating, predict_latency
    from edgekit.models import count_model, create

    profile = load_profile(args.profile)
    size = int(profile["input_size"])
    precision = profile["precision"]
    threads = args.threads or profile["device"].get("threads")
    if threads != profile["device"].get("threads"):
        print(
            f"warning: measuring with {threads} threads, the profile has "
            f"{profile['device'].get('threads')}",
            file=sys.stderr,
        )
    fmt = "tflite_int8" if precision == "int8" else "tflite_fp32"
    data = load_dataset("digits", (size, size, 3))
    calib = data.x_train[:64]
    work = Path(tempfile.mkdtemp(prefix="edgekit-lut-accuracy-"))

    rows = []
    runners = {}
    t0 = time.perf_counter()
    specs = [(m, float(w)) for m in args.models.split(",") for w in args.widths.split(",")]
    for i, (name, width) in enumerate(specs):
        model = create(name, input_shape=(size, size, 3), classes=args.classes, width=width)
        pred = predict_latency(model, profile)
        art = get_converter(fmt).convert(
            model, work, ConvertOptions(stem=f"{name}_{width}", calibration=calib)
        )
        label = f"{name} {width}"
        runners[label] = (open_runner("litert", art.path, threads=threads), data.x_test[:1])
        rows.append(
            {
                "label": label,
                "model": name,
                "width": width,
                "macs": count_model(model).macs,
                "predicted": pred.latency_ms,
                "raw": pred.overhead_ms + (pred.latency_ms - pred.overhead_ms) / pred.scale,
                "interpolated": len(pred.interpolated),
                "ops": len(pred.per_layer),
            }
        )
        print(
            f"  [{i + 1}/{len(specs)}] {label}: predicted {pred.latency_ms:.3f} ms "
            f"({len(pred.interpolated)}/{len(pred.per_layer)} ops interpolated) "
            f"{time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
    print(f"measuring {len(runners)} models side by side ...", file=sys.stderr)
    # Timed exactly as the profile's micro-models were (measure_alternating), so that the
    # comparison is between the table and the models, not between two timing loops.
    measured = measure_alternating(
        runners, runs=args.runs, rounds=args.rounds, warmup_ms=args.warmup_ms
    )
    grid_widths = {float(w) for w in profile.get("grid", {}).get("widths", [])}
    for r in rows:
        r["measured"] = measured[r["label"]]
        r["error"] = r["predicted"] / r["measured"] - 1
        r["raw_error"] = r["raw"] / r["measured"] - 1
        r["in_grid"] = r["width"] in grid_widths

    errors = np.array([r["error"] for r in rows])
    raw_errors = np.array([r["raw_error"] for r in rows])
    off = np.array([r["error"] for r in rows if not r["in_grid"]])
    within = float(np.mean(np.abs(errors) <= TOLERANCE))
    rho = float(spearmanr([r["predicted"] for r in rows], [r["measured"] for r in rows])[0])
    dev = profile["device"]
    lines = [
        "## lut_accuracy: look-up-table predictions vs measured latency",
        "",
        f"Profile `{profile['name']}` ({precision}, {len(profile['entries'])} entries, "
        f"built {profile.get('built', {}).get('date', '?')} on {dev.get('cpu')}, "
        f"{dev.get('threads')} threads, {dev.get('runtime', {}).get('package')} "
        f"{dev.get('runtime', {}).get('version')}). Models: {', '.join(args.models.split(','))} "
        f"at {size}x{size}x3, {args.classes} classes, LiteRT {precision}, {threads} threads, "
        f"measured p50: median of the p50s of {args.rounds} alternating rounds, "
        f"{args.runs} runs in all, each model warm ({args.warmup_ms:g} ms of untimed runs "
        "before its timed runs in every round). The profile's grid widths are "
        f"{', '.join(f'{w:g}' for w in sorted(grid_widths)) or 'unknown'}; the layers of the "
        "other widths are interpolated, and those models were not among the ones the "
        f"profile's calibration scale ({profile.get('calibration', {}).get('scale', 1.0)}) "
        f"was fitted on. Host: {host_line()}.",
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
    lines += [
        "",
        f"within {TOLERANCE:.0%} of measured p50: {within:.0%} of {len(rows)} models "
        f"(target >= 90%); Spearman rank correlation: {rho:.3f} (target >= 0.9); "
        f"mean |error| {np.mean(np.abs(errors)):.1%}, max |error| {np.max(np.abs(errors)):.1%}, "
        f"mean error {np.mean(errors):+.1%}.",
        "",
        f"Widths outside the grid only ({len(off)} models): "
        + (
            f"{np.mean(np.abs(off) <= TOLERANCE):.0%} within {TOLERANCE:.0%}, "
            f"max |error| {np.max(np.abs(off)):.1%}. "
            if len(off)
            else "none. "
        )
        + f"Plain sums (overhead + sum of entries, no calibration scale): "
        f"{np.mean(np.abs(raw_errors) <= TOLERANCE):.0%} within {TOLERANCE:.0%}, "
        f"mean error {np.mean(raw_errors):+.1%}, max |error| {np.max(np.abs(raw_errors)):.1%}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("lut_accuracy", text)


if __name__ == "__main__":
    main()
