"""Every cpu artifact of MobileNetV2 1.0 at 224, timed side by side, and whether deploy's
selection holds up when measured again.

Runs the real `deploy --target cpu` pipeline on a MobileNetV2 1.0 224x224 model with 10
outputs and random weights (latency does not depend on the weights; with random weights the
accuracy columns mean nothing, so selection is by latency alone: --max-drop 100). Then times
all eight artifacts again, side by side in alternating rounds, and reports the selected
artifact's p50 over the fastest one's. Results go to benchmarks/RESULTS.md.

    python benchmarks/cpu_runtimes.py [--threads 2] [--runs 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()

    from edgekit.data import load_dataset
    from edgekit.deploy import DeployRequest, SilentProgress, deploy
    from edgekit.measure import measure_side_by_side, open_runner
    from edgekit.models import create
    from edgekit.models._io import save_keras_model

    class Progress(SilentProgress):
        def step(self, message: str) -> None:
            print(f"  {message}", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="edgekit-runtimes-"))
    model = create("mobilenet_v2", input_shape=(224, 224, 3), classes=10, width=1.0)
    model_path = save_keras_model(model, work / "mobilenet_v2_224.keras")
    report = deploy(
        DeployRequest(
            target="cpu",
            model_path=model_path,
            out=work / "out",
            max_drop=100.0,
            runs=args.runs,
            threads=args.threads,
        ),
        Progress(),
    )
    print("re-measuring every artifact side by side ...", file=sys.stderr)
    data = load_dataset("digits", (224, 224, 3))
    runners = {
        a["format"]: open_runner(a["runtime"]["name"], a["path"], threads=args.threads)
        for a in report["artifacts"]
    }
    again = measure_side_by_side(runners, data.x_test[:1], runs=args.runs, warmup=20, rounds=5)
    fastest = min(again, key=lambda k: again[k].p50)
    selected = report["selected"]
    ratio = again[selected].p50 / again[fastest].p50

    lines = [
        "## cpu_runtimes: every cpu artifact of MobileNetV2 1.0 at 224, side by side",
        "",
        f"`deploy --target cpu` on MobileNetV2 1.0, 224x224x3, 10 outputs, random weights "
        f"(selection by latency only: --max-drop 100), {args.threads} threads, {args.runs} runs "
        f"per artifact in 5 alternating rounds; then all artifacts timed again the same way. "
        f"Host: {host_line()}.",
        "",
        "| artifact | runtime | size | deploy p50 ms | re-measured p50 ms | re-measured p90 ms |",
        "|---|---|---|---|---|---|",
    ]
    for a in report["artifacts"]:
        f = a["format"]
        lines.append(
            f"| {f}{' (selected)' if f == selected else ''} | {a['runtime']['name']} | "
            f"{a['size_bytes'] / 2**20:.2f} MiB | {a['latency_ms']['p50']:.3f} | "
            f"{again[f].p50:.3f} | {again[f].p90:.3f} |"
        )
    lines += [
        "",
        f"selected by deploy: {selected}; fastest when re-measured: {fastest}; "
        f"selected / fastest p50 = {ratio:.3f}",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("cpu_runtimes", text)


if __name__ == "__main__":
    main()
