"""`edgekit bench` next to the vendors' own tools on the same files and threads.

MobileNetV2 1.0 at 224x224 (random weights), as TFLite fp32, TFLite int8 and OpenVINO IR
fp32. Each file is timed by edgekit's profiler and by the vendor tool (litert-benchmark for
TFLite, OpenVINO's benchmark_app for the IR: sync API, one request, `-hint none -nthreads N`,
f32 inference precision as edgekit uses), alternating for several rounds; the medians of the
round medians are compared. Also reports edgekit's p90/p50. Results go to
benchmarks/RESULTS.md.

    python benchmarks/profiler_agreement.py [--threads 2] [--runs 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section
from _tools import litert_benchmark, tool

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)


def benchmark_app(path: Path, threads: int, runs: int) -> float:
    # -nthreads only takes effect with -hint none; one sync request is edgekit's setting.
    proc = subprocess.run(
        [
            tool("benchmark_app"),
            "-m",
            str(path),
            "-d",
            "CPU",
            "-hint",
            "none",
            "-api",
            "sync",
            "-nireq",
            "1",
            "-nthreads",
            str(threads),
            "-niter",
            str(runs),
            "-infer_precision",
            "f32",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    m = re.search(r"Median:\s+([\d.]+)\s*ms", proc.stdout)
    if not m:
        raise RuntimeError(f"benchmark_app printed no median:\n{proc.stdout[-2000:]}")
    return float(m.group(1))


def edgekit_bench(path: Path, threads: int, runs: int, warmup: int) -> tuple[float, float]:
    proc = subprocess.run(
        [
            tool("edgekit"),
            "bench",
            str(path),
            "--json",
            "--threads",
            str(threads),
            "--runs",
            str(runs),
            "--warmup",
            str(warmup),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    lat = json.loads(proc.stdout)["latency_ms"]
    return lat["p50"], lat["p90"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from edgekit.converters import ConvertOptions, get_converter, plan_chain
    from edgekit.data import load_dataset
    from edgekit.models import create

    model = create("mobilenet_v2", input_shape=(224, 224, 3), classes=1000, width=1.0)
    data = load_dataset("digits", (224, 224, 3))
    work = Path(tempfile.mkdtemp(prefix="edgekit-agree-"))
    built = {"keras": model}
    opts = ConvertOptions(stem="mobilenet_v2_224", calibration=data.x_train[:100])
    for step in plan_chain(["tflite_fp32", "tflite_int8", "openvino_fp32"]):
        print(f"converting {step} ...", file=sys.stderr)
        conv = get_converter(step)
        built[step] = conv.convert(built[conv.source], work, opts)

    rows = []
    for fmt, tool_name in (
        ("tflite_fp32", "litert-benchmark"),
        ("tflite_int8", "litert-benchmark"),
        ("openvino_fp32", "benchmark_app"),
    ):
        path = built[fmt].path
        ours, tails, theirs = [], [], []
        for r in range(args.rounds):
            p50, p90 = edgekit_bench(path, args.threads, args.runs, args.warmup)
            ours.append(p50)
            tails.append(p90 / p50)
            if tool_name == "litert-benchmark":
                theirs.append(litert_benchmark(path, args.threads, args.runs, args.warmup))
            else:
                theirs.append(benchmark_app(path, args.threads, args.runs))
            print(
                f"  {fmt} round {r + 1}: edgekit {p50:.3f} ms, {tool_name} {theirs[-1]:.3f} ms",
                file=sys.stderr,
            )
        a, b = statistics.median(ours), statistics.median(theirs)
        rows.append((fmt, tool_name, a, b, a / b, statistics.median(tails)))

    lines = [
        "## profiler_agreement: `edgekit bench` vs the vendors' tools",
        "",
        f"MobileNetV2 1.0 at 224x224x3 (random weights), batch 1, {args.threads} threads, "
        f"{args.runs} runs after {args.warmup} warm-up per round, median of {args.rounds} "
        f"alternating rounds; each tool in its own process. Host: {host_line()}.",
        "",
        "| artifact | vendor tool | edgekit p50 ms | vendor median ms | ratio | edgekit p90/p50 |",
        "|---|---|---|---|---|---|",
    ]
    for fmt, tool_name, a, b, ratio, tail in rows:
        lines.append(f"| {fmt} | {tool_name} | {a:.3f} | {b:.3f} | {ratio:.3f} | {tail:.3f} |")
    text = "\n".join(lines)
    print(text)
    write_section("profiler_agreement", text)


if __name__ == "__main__":
    main()
