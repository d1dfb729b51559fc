"""edgekit's LiteRT latency next to litert-benchmark on the same files and threads.

MobileNetV2 1.0 at 224x224 (random weights: latency does not depend on their values), built
as TFLite fp32 and full-integer int8 by edgekit's converters (int8 calibrated on digits
resized to 224). For each file, edgekit's profiler and `litert-benchmark` (shipped with
ai-edge-litert) alternate for several rounds; the median of each tool's round medians is
compared. Results go to benchmarks/RESULTS.md.

    python benchmarks/cpu_deploy.py [--threads 2] [--runs 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section
from _tools import litert_benchmark

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from edgekit.converters import ConvertOptions, get_converter
    from edgekit.data import load_dataset
    from edgekit.measure import measure_latency, open_runner
    from edgekit.models import count_model, create

    model = create("mobilenet_v2", input_shape=(224, 224, 3), classes=1000, width=1.0)
    cost = count_model(model)
    data = load_dataset("digits", (224, 224, 3))
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-"))
    rows = []
    for fmt in ("tflite_fp32", "tflite_int8"):
        print(f"converting {fmt} ...", file=sys.stderr)
        art = get_converter(fmt).convert(
            model, work, ConvertOptions(stem="mobilenet_v2_224", calibration=data.x_train[:100])
        )
        ours, theirs = [], []
        for r in range(args.rounds):
            runner = open_runner("litert", art.path, threads=args.threads)
            ours.append(
                measure_latency(runner, data.x_test[:1], runs=args.runs, warmup=args.warmup).p50
            )
            del runner
            theirs.append(litert_benchmark(art.path, args.threads, args.runs, args.warmup))
            print(
                f"  round {r + 1}: edgekit {ours[-1]:.3f} ms, litert-benchmark {theirs[-1]:.3f} ms",
                file=sys.stderr,
            )
        a, b = statistics.median(ours), statistics.median(theirs)
        rows.append((fmt, art.size_bytes, a, b, a / b))
    shutil.rmtree(work, ignore_errors=True)

    lines = [
        "## cpu_deploy: edgekit's LiteRT p50 vs litert-benchmark",
        "",
        f"MobileNetV2 1.0, 224x224x3, 1000 classes ({cost.macs / 1e6:.1f}M MACs, "
        f"{cost.params / 1e6:.2f}M params), batch 1, {args.threads} threads, {args.runs} runs after "
        f"{args.warmup} warm-up, median of {args.rounds} alternating rounds. Host: {host_line()}.",
        "",
        "| artifact | size | edgekit p50 ms | litert-benchmark median ms | ratio |",
        "|---|---|---|---|---|",
    ]
    for fmt, size, a, b, ratio in rows:
        lines.append(f"| {fmt} | {size / 2**20:.2f} MiB | {a:.3f} | {b:.3f} | {ratio:.3f} |")
    fp32 = next(r for r in rows if r[0] == "tflite_fp32")
    int8 = next(r for r in rows if r[0] == "tflite_int8")
    lines += ["", f"int8 / fp32 p50 (edgekit): {int8[2] / fp32[2]:.3f}"]
    text = "\n".join(lines)
    print(text)
    write_section("cpu_deploy", text)


if __name__ == "__main__":
    main()
