"""NetAdapt against uniform width multipliers, on --target cpu (LiteRT int8), measured.

For each zoo model (MobileNet v1 and v2 by default) at an input size where its int8 latency
here is at least 1 ms: train it on digits, then for each budget (0.75x and 0.5x of its
measured latency) run NetAdapt with the width-multiplier baseline (the same architecture at
uniform widths, trained for as many epochs as the NetAdapt network saw). Each result's int8
artifact is then measured afresh with `edgekit bench`, and its accuracy is compared with
the baseline's at the same measured latency (interpolated between the two nearest widths).
Results, with each search's wall time, go to benchmarks/RESULTS.md.

    python benchmarks/netadapt.py [--models mobilenet_v1,mobilenet_v2] [--input-size 160]
        [--budgets 0.75x,0.5x] [--train-epochs 10] [--short-steps 40] [--long-epochs 3]
        [--proposals 6] [--workers 2]

A smoke run on a tiny model checks the script itself in a few minutes:

    python benchmarks/netadapt.py --models mobilenet_v2_tiny --input-size 32 --train-epochs 2 \\
        --short-steps 2 --long-epochs 0 --proposals 2 --budgets 0.8x --no-write
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def baseline_accuracy_at(baseline: list[dict[str, Any]], latency: float) -> float | None:
    """The width baseline's test accuracy at ``latency`` ms, linearly interpolated between
    the two nearest measured widths; None outside the measured range."""
    points = sorted((b["latency_ms"], b["accuracy"]) for b in baseline if b.get("latency_ms"))
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= latency <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (latency - x0) / (x1 - x0)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v1,mobilenet_v2")
    ap.add_argument("--input-size", type=int, default=160)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--budgets", default="0.75x,0.5x")
    ap.add_argument("--train-epochs", type=int, default=10)
    ap.add_argument("--short-steps", type=int, default=40)
    ap.add_argument("--long-epochs", type=int, default=3)
    ap.add_argument("--proposals", type=int, default=6)
    ap.add_argument("--init-fraction", type=float, default=0.1)
    ap.add_argument("--decay", type=float, default=0.9)
    ap.add_argument("--baseline-widths", default="1.0,0.75,0.5,0.35,0.25")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--runs", type=int, default=100, help="timed runs per measurement")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args()

    from edgekit.data import load_dataset
    from edgekit.measure._bench import bench_artifact
    from edgekit.search import NetAdaptOptions, ZooSpec, make_executor, netadapt, train_zoo_model

    size = args.input_size
    data = load_dataset("digits", (size, size, 3))
    work = args.out or Path(tempfile.mkdtemp(prefix="edgekit-netadapt-"))
    widths = tuple(float(w) for w in args.baseline_widths.split(","))
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        zoo = ZooSpec(name, args.width, size, args.train_epochs)
        print(f"{name}: training {args.train_epochs} epochs at {size}x{size}", file=sys.stderr)
        t0 = time.perf_counter()
        model = train_zoo_model(zoo, data, seed=0)
        train_s = time.perf_counter() - t0
        for budget in [b.strip() for b in args.budgets.split(",") if b.strip()]:
            print(f"{name}: NetAdapt to {budget} of the measured latency", file=sys.stderr)
            options = NetAdaptOptions(
                budgets=(budget,),
                proposals=args.proposals,
                short_steps=args.short_steps,
                long_epochs=args.long_epochs,
                init_fraction=args.init_fraction,
                decay=args.decay,
                measure_runs=args.runs,
                baseline=True,
                baseline_widths=widths,
            )
            t0 = time.perf_counter()
            with make_executor(args.workers) as executor:
                report = netadapt(
                    model,
                    data,
                    work / f"{name}-{budget}",
                    options,
                    target="cpu",
                    zoo=zoo,
                    executor=executor,
                    progress=_say,
                )
            wall = time.perf_counter() - t0
            result = report["result"]
            fresh = bench_artifact(result["artifact"], runs=args.runs * 3, threads=2)
            p50 = float(fresh["latency_ms"]["p50"])
            budget_ms = report["budget"]["latency"]["value"]
            noise = report["budget"]["latency"].get("noise", 0.0)
            base_acc = baseline_accuracy_at(report["width_baseline"], p50)
            rows.append(
                {
                    "model": name,
                    "budget": budget,
                    "budget_ms": budget_ms,
                    "ref_ms": report["reference"]["latency_ms"],
                    "ref_acc": report["reference"]["accuracy"],
                    "p50": p50,
                    "met": p50 <= budget_ms * (1 + noise),
                    "noise": noise,
                    "acc": result["accuracy"],
                    "base_acc": base_acc,
                    "iterations": len(report["iterations"]),
                    "status": report["status"],
                    "baseline": report["width_baseline"],
                    "wall": wall,
                    "train_s": train_s,
                }
            )
            _say(
                f"{name} {budget}: p50 {p50:.3f} ms (budget {budget_ms:.3f}), accuracy "
                f"{result['accuracy']:.4f} vs width baseline {base_acc}, {wall / 60:.1f} min"
            )

    lines = [
        "## netadapt: NetAdapt vs width multipliers on --target cpu (LiteRT int8, 2 threads)",
        "",
        f"Zoo models at {size}x{size}, width {args.width:g}, trained {args.train_epochs} "
        f"epochs on digits ({len(data.y_test)} held-out test images). NetAdapt: K = "
        f"{args.proposals} proposals per iteration, {args.short_steps} batches each, "
        f"{args.long_epochs} long epochs; budgets are shares of the reference's measured "
        "latency. The result's p50 is a fresh `edgekit bench` of its int8 artifact; 'baseline "
        "acc.' is the width multipliers' test accuracy at that latency (interpolated). "
        f"Host: {host_line()}.",
        "",
        "| model | budget | ref p50 ms (acc.) | budget ms | result p50 ms | met (noise) | "
        "result acc. | baseline acc. | iterations | search wall min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = "n/a" if r["base_acc"] is None else f"{r['base_acc']:.4f}"
        lines.append(
            f"| {r['model']} | {r['budget']} | {r['ref_ms']:.3f} ({r['ref_acc']:.4f}) | "
            f"{r['budget_ms']:.3f} | {r['p50']:.3f} | {'yes' if r['met'] else 'NO'} "
            f"({r['noise']:.1%}) | {r['acc']:.4f} | {base} | {r['iterations']} "
            f"({r['status']}) | {r['wall'] / 60:.1f} |"
        )
    lines.append("")
    for r in rows:
        pts = ", ".join(
            f"w{b['width']:g}: {b['latency_ms']:.3f} ms / {b['accuracy']:.4f}"
            for b in r["baseline"]
        )
        lines.append(f"- {r['model']} {r['budget']} width baseline: {pts}")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("netadapt", body)


if __name__ == "__main__":
    main()
