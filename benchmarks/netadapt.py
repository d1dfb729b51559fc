"""NetAdapt against uniform width multipliers, on --target cpu (LiteRT int8), measured.

For each zoo model (MobileNet v1 and v2 by default) at an input size where its int8 latency
here is at least 1 ms (176x176: the cpu target ships a look-up table for it): train it on
digits, then for each budget (0.75x and 0.5x of its measured latency) run NetAdapt. The
width-multiplier baseline (the same architecture at uniform widths) is trained once per
model, for as many epochs as the longer-trained of its NetAdapt results saw, which favours
the baseline of the shorter search. Each result's int8 artifact is measured afresh with
`edgekit bench` (against its budget), then the reference, the results and the baseline are
measured side by side in alternating rounds, and each result's accuracy is compared with the
baseline's at the same latency (interpolated between the two nearest widths). Results, with
each search's wall time, go to benchmarks/RESULTS.md.

    python benchmarks/netadapt.py [--models mobilenet_v1,mobilenet_v2] [--input-size 176|auto]
        [--budgets 0.75x,0.5x] [--train-epochs 14] [--short-steps 15] [--long-epochs 5]
        [--proposals 4] [--workers 2] [--distill] [--final fine-tune|scratch]
        [--final-epochs N] [--data digits|FILE.npz]

A harder task than digits, where a network's width costs accuracy: make it once with
`python benchmarks/clutter_digits.py --out clutter_digits.npz`, then pass
`--data clutter_digits.npz`.

A smoke run on a tiny model checks the script itself in a few minutes:

    python benchmarks/netadapt.py --models mobilenet_v2_tiny --input-size 32 --train-epochs 2 \\
        --short-steps 2 --long-epochs 0 --proposals 2 --budgets 0.8x,0.6x \\
        --baseline-widths 1.0,0.5 --no-write
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from edgekit._io import write_bytes_atomic, write_json_atomic

CHARTS = Path(__file__).with_name("netadapt")
# A run's portable record, next to its charts (see write_run_record).
RUN_RECORD = "run.json.gz"
# Side-by-side sessions of the final timing (the median is reported, and the spread).
SESSIONS = 3
# Fresh `edgekit bench` processes per result (and as many of the reference).
FRESH = 5


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
    from edgekit.search import NetAdaptOptions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v1,mobilenet_v2")
    ap.add_argument(
        "--input-size",
        default="176",
        help="pixels, or 'auto': the smallest size the cpu target has a table for at which "
        "every model's int8 latency here is at least 1 ms",
    )
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument(
        "--data",
        default="digits",
        help="digits, or an .npz / image folder (e.g. one made by benchmarks/clutter_digits.py)",
    )
    ap.add_argument("--budgets", default="0.75x,0.5x")
    ap.add_argument("--train-epochs", type=int, default=14)
    ap.add_argument("--short-steps", type=int, default=15)
    ap.add_argument("--long-epochs", type=int, default=5)
    ap.add_argument(
        "--distill",
        action="store_true",
        help="the result's final training and every width of the baseline learn from the reference",
    )
    ap.add_argument(
        "--final",
        choices=["fine-tune", "scratch"],
        default=NetAdaptOptions.final,
        help="scratch: each result is its searched architecture trained from fresh weights "
        "for as many epochs as a fine-tuned result's weights would have seen (the baseline "
        "trains as long as the longer search's)",
    )
    ap.add_argument(
        "--final-epochs",
        type=int,
        default=None,
        help="with --final scratch: every result and every width of the baseline train this "
        "many epochs, so each result is compared with a baseline exactly as long-trained",
    )
    ap.add_argument("--bn-batches", type=int, default=NetAdaptOptions.bn_batches)
    ap.add_argument(
        "--screen-batches",
        type=int,
        default=NetAdaptOptions.screen_batches,
        help="score every group's proposal unfine-tuned (BatchNorm re-estimated on N batches) "
        "and fine-tune the --proposals best; 0: the groups that cost most",
    )
    ap.add_argument("--learning-rate", type=float, default=NetAdaptOptions.learning_rate)
    ap.add_argument("--proposals", type=int, default=4)
    ap.add_argument("--init-fraction", type=float, default=0.08)
    ap.add_argument("--decay", type=float, default=0.96)
    ap.add_argument("--baseline-widths", default="1.0,0.75,0.5")
    ap.add_argument(
        "--baseline-from",
        type=Path,
        default=None,
        help="another run's --out folder: take each baseline width it trained exactly as this "
        "run would (same model, input size, data, epochs, seed, not distilled) instead of "
        "training it again; a width depends on none of the search settings",
    )
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--runs", type=int, default=100, help="timed runs per measurement")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ap.add_argument(
        "--seed", type=int, default=0, help="seeds the reference, the searches and the baseline"
    )
    ap.add_argument(
        "--section",
        default="netadapt",
        help="RESULTS.md section to write; charts go to benchmarks/<section>/",
    )
    ap.add_argument(
        "--from-run",
        type=Path,
        default=None,
        help="skip training and searching: measure the searches saved in this --out folder",
    )
    ap.add_argument(
        "--report-only",
        type=Path,
        default=None,
        help="measure nothing: write the section again from this --out folder's rows.json",
    )
    args = ap.parse_args()
    if args.baseline_from is not None and args.distill:
        ap.error(
            f"--baseline-from {args.baseline_from}: under --distill every width learns from "
            "this run's own reference, so none can be taken from another run; leave one out"
        )
    if args.baseline_from is not None and not args.baseline_from.is_dir():
        ap.error(f"--baseline-from {args.baseline_from}: not a folder; give another run's --out")
    if args.final_epochs is not None and (args.final != "scratch" or args.final_epochs < 1):
        ap.error(
            f"--final-epochs {args.final_epochs}: needs --final scratch and a count of at "
            "least 1 (a fine-tuned result's epochs follow from its search)"
        )

    from edgekit.data import load_dataset

    args.input_size_note = None
    saved_run = args.report_only or args.from_run
    if saved_run is not None:  # the saved run's size, before its data are loaded
        saved_args = json.loads((saved_run / "rows.json").read_text()).get("args", {})
        args.input_size = saved_args.get("input_size", args.input_size)
        args.input_size_note = saved_args.get("input_size_note")
        args.data = saved_args.get("data", "digits")  # runs before --data was added: digits
    if args.input_size == "auto":
        args.input_size, args.input_size_note = pick_input_size(args.models, args.width)
    args.input_size = int(args.input_size)
    size = args.input_size
    data = load_dataset(args.data, (size, size, 3))
    args.data_about = data_about(args.data)
    if args.report_only is not None or args.from_run is not None:
        work = args.report_only or args.from_run
        saved = json.loads((work / "rows.json").read_text())
        rows, baselines = saved["rows"], saved["baselines"]
        for key, value in saved.get("args", {}).items():  # the run's settings, for the text
            setattr(args, key, value)
    else:
        work = args.out or Path(tempfile.mkdtemp(prefix="edgekit-netadapt-"))
        rows, baselines = [], {}
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        # Checked for every model before any work: a refusal never ends a run hours in.
        lent = {name: borrowed_widths(args.baseline_from, name, settings(args)) for name in names}
        for name in names:
            model_rows, baselines[name] = run_model(name, data, work / name, args, lent[name])
            rows += model_rows
            saved = {"rows": rows, "baselines": baselines, "args": settings(args)}
            write_json_atomic(work / "rows.json", saved)
    if args.report_only is None:
        for name in baselines:
            model_rows = [r for r in rows if r["model"] == name]
            measure_model(name, model_rows, baselines[name], work, args)
        saved = {"rows": rows, "baselines": baselines, "args": settings(args)}
        write_json_atomic(work / "rows.json", saved)
    for r in rows:
        judge(r)
    body = results_section(rows, baselines, data, args)
    print(body)
    if not args.no_write:
        write_charts(work, rows, baselines, CHARTS.with_name(args.section))
        if (work / "rows.json").is_file() and all(
            (work / r["model"] / r["budget"] / "result.keras").is_file() for r in rows
        ):
            write_run_record(work, CHARTS.with_name(args.section) / RUN_RECORD)
        write_section(args.section, body)


def data_about(source: str) -> str | None:
    """The description an .npz data set carries in its optional ``about`` array, if any."""
    if not str(source).endswith(".npz"):
        return None
    with np.load(source, allow_pickle=False) as z:
        return str(z["about"]) if "about" in z.files else None


def pick_input_size(models: str, width: float, floor_ms: float = 1.0) -> tuple[int, str]:
    """The smallest input size the cpu target has a latency table for at which every model
    (untrained, ``width``) runs at least ``floor_ms`` in int8 LiteRT here, and why.

    The issue asks for an input size where the reference takes at least 1 ms; how large that
    is depends on the CPU: 176 px on an AVX-512 VNNI EPYC (MobileNet v1 1.30 ms, 128 px
    0.7 ms), 128 px on an AVX2-only one, where int8 runs 2.5-3.6x as long."""
    from edgekit.measure.lut import load_profile
    from edgekit.models import create
    from edgekit.search import Meter
    from edgekit.targets import load_target

    spec = load_target("cpu")
    names = [spec.profile, *spec.more_profiles]
    sizes = sorted({int(load_profile(n)["input_size"]) for n in names if n})
    names_list = [m.strip() for m in models.split(",") if m.strip()]
    timed: dict[int, dict[str, float]] = {}
    chosen = sizes[-1]
    for size in sizes:
        meter = Meter(can_measure=True, threads=spec.threads, runs=50)
        timed[size] = {
            name: meter.measure_ms(
                create(name, input_shape=(size, size, 3), classes=10, width=width)
            )
            for name in names_list
        }
        _say(
            f"input size {size}: " + ", ".join(f"{n} {ms:.3f} ms" for n, ms in timed[size].items())
        )
        if min(timed[size].values()) >= floor_ms:
            chosen = size
            break
    why = (
        f"input size chosen by --input-size auto: the smallest of the cpu target's table sizes "
        f"({', '.join(map(str, sizes))}) at which every model's int8 latency here was at least "
        f"{floor_ms:g} ms ("
        + "; ".join(
            f"{s} px: " + ", ".join(f"{n} {ms:.2f}" for n, ms in t.items())
            for s, t in timed.items()
        )
        + " ms, untrained)"
    )
    print(why, file=sys.stderr)
    return chosen, why


def write_run_record(work: Path, to: Path) -> Path:
    """What benchmarks/netadapt_retrain.py needs to train a run's networks again after its
    --out folder is gone, kept next to its charts (gzip JSON, a few kB): the run's rows.json
    (rows, baselines, settings) and each result's architecture (Keras config, no weights: a
    retraining starts from fresh weights)."""
    import gzip

    from edgekit.models._io import load_keras_model

    saved = json.loads((work / "rows.json").read_text())
    saved["architectures"] = {
        f"{r['model']} {r['budget']}": json.loads(
            load_keras_model(work / r["model"] / r["budget"] / "result.keras").to_json()
        )
        for r in saved["rows"]
    }
    to.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(
        to, gzip.compress(json.dumps(saved, sort_keys=True).encode(), mtime=0)
    )


def write_charts(
    work: Path, rows: list[dict[str, Any]], baselines: dict[str, list[dict[str, Any]]], to: Path
) -> list[Path]:
    """One accuracy-vs-latency chart per search: its iterations (as timed during the search),
    and the reference, the result and the model's width baseline at the latencies of the
    benchmark's side-by-side timing, so the points compared with each other come from one
    session (the search's own final timing of the result can be 8% off it on this host)."""
    from edgekit.search import write_chart

    written = []
    for r in rows:
        report = json.loads((work / r["model"] / r["budget"] / "netadapt.json").read_text())
        report["width_baseline"] = baselines[r["model"]]
        if r.get("side_ms") and r.get("side_ref_ms"):
            report["result"]["latency_ms"] = r["side_ms"]
            report["reference"]["latency_ms"] = r["side_ref_ms"]
        written.append(write_chart(report, to / f"{r['model']}_{r['budget']}.png"))
    return written


def run_model(
    name: str,
    data: Any,
    work: Path,
    args: argparse.Namespace,
    borrowed: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train ``name``, search each budget, train the width baseline once, measure all."""
    from edgekit.models._io import load_keras_model
    from edgekit.search import (
        NetAdaptOptions,
        ZooSpec,
        make_executor,
        netadapt,
        train_zoo_model,
    )

    size = args.input_size
    zoo = ZooSpec(name, args.width, size, args.train_epochs)
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    # A killed benchmark started again with the same --out goes on: the searches that
    # finished (their netadapt.json) are read back, and so is the trained reference.
    work.mkdir(parents=True, exist_ok=True)
    progress_path = work / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {}
    # What decides a search and the reference: a run given other values is another run.
    # (The budgets and the baseline's widths may change: each is searched or trained alone.)
    defining = {
        k: v
        for k, v in settings(args).items()
        if k not in ("baseline_widths", "budgets", "models", "data_about", "input_size_note")
    }
    defining["runs"] = args.runs  # every timing of a search
    if progress and "settings" not in progress:
        raise SystemExit(
            f"{progress_path}: holds no settings to check this invocation's against; give "
            "another --out"
        )
    if progress and progress["settings"] != defining:
        changed = sorted(
            k
            for k in {*defining, *progress["settings"]}
            if progress["settings"].get(k, "(none)") != defining.get(k, "(none)")
        )
        raise SystemExit(
            f"{work}: this run was made with other settings ({', '.join(changed)}); give "
            "another --out, or the run's own settings"
        )
    done = [b for b in budgets if (work / b / "netadapt.json").is_file()]
    if done and "train_s" in progress:
        print(f"{name}: the reference trained by the run in {work}", file=sys.stderr)
        model = load_keras_model(work / done[0] / "reference.keras")
        train_s = float(progress["train_s"])
    else:
        print(f"{name}: training {args.train_epochs} epochs at {size}x{size}", file=sys.stderr)
        t0 = time.perf_counter()
        model = train_zoo_model(zoo, data, seed=args.seed)
        train_s = time.perf_counter() - t0
        progress = {"train_s": round(train_s, 1), "walls": {}, "settings": defining}
        write_json_atomic(progress_path, progress)
    rows = []
    reports = {}
    for budget in budgets:
        if budget in done and budget in progress.get("walls", {}):
            report = json.loads((work / budget / "netadapt.json").read_text())
            wall = float(progress["walls"][budget])
            _say(f"{name} {budget}: the finished search in {work / budget}")
            rows.append(_row(name, budget, report, wall, train_s, args, len(data.x_train)))
            continue
        if (work / budget).exists():
            raise SystemExit(
                f"{work / budget}: a search that did not finish; remove the folder to search "
                "again (or continue it with edgekit search netadapt --resume)"
            )
        print(f"{name}: NetAdapt to {budget} of the measured latency", file=sys.stderr)
        options = NetAdaptOptions(
            budgets=(budget,),
            proposals=args.proposals,
            short_steps=args.short_steps,
            bn_batches=args.bn_batches,
            screen_batches=args.screen_batches,
            learning_rate=args.learning_rate,
            long_epochs=args.long_epochs,
            final=args.final,
            final_epochs=args.final_epochs,
            distill=args.distill,
            init_fraction=args.init_fraction,
            decay=args.decay,
            measure_runs=args.runs,
            seed=args.seed,
            baseline=False,  # trained once per model below
        )
        t0 = time.perf_counter()
        with make_executor(args.workers) as executor:
            report = netadapt(
                model, data, work / budget, options, target="cpu", zoo=zoo,
                executor=executor, progress=_say,
            )  # fmt: skip
        wall = time.perf_counter() - t0
        reports[budget] = report
        progress.setdefault("walls", {})[budget] = round(wall, 1)
        write_json_atomic(progress_path, progress)
        rows.append(_row(name, budget, report, wall, train_s, args, len(data.x_train)))
        _say(f"{name} {budget}: accuracy {rows[-1]['acc']:.4f}, {wall / 60:.1f} min")

    epochs = max(r["epochs"] for r in rows)
    teacher = model if args.distill else None
    baseline, baseline_s = train_baseline(
        zoo, data, work / "baseline", epochs, args, teacher,
        trained=progress.setdefault("baseline", {}),
        save=lambda: write_json_atomic(progress_path, progress),
        borrowed=borrowed,
    )  # fmt: skip
    for r in rows:
        r["baseline_s"] = baseline_s
    return rows, baseline


def _row(
    name: str, budget: str, report: dict[str, Any], wall: float, train_s: float,
    args: argparse.Namespace, n_train: int,
) -> dict[str, Any]:  # fmt: skip
    """One search's row of the table, from its report."""
    from edgekit.search import NetAdaptOptions, result_epochs

    options = NetAdaptOptions.from_dict(report["options"])
    budget_ms = float(report["budget"]["latency"]["value"])
    return {
        "model": name,
        "budget": budget,
        "budget_ms": budget_ms,
        "ref_ms": float(report["reference"]["latency_ms"]),
        "ref_acc": float(report["reference"]["accuracy"]),
        "acc": float(report["result"]["accuracy"]),
        "macs_ratio": report["result"]["macs"] / report["reference"]["macs"],
        "iterations": len(report["iterations"]),
        "status": report["status"],
        "epochs": (
            report["result"]["training"]["epochs"]
            if args.final == "scratch"
            else result_epochs(args.train_epochs, len(report["iterations"]), options, n_train)
        ),
        "wall": wall,
        "final": report["result"]["training"],
        "train_s": train_s,
        "latency_from": report["latency_source"]
        + (f" (table {report['profile']})" if report.get("profile") else ""),
        "history": [
            (it["group"], it["channels_before"], it["channels_after"])
            for it in report["iterations"]
        ],
        "phases": phase_totals(report["iterations"]),
    }


def phase_totals(iterations: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds the search's iterations spent in each phase (planning, screening,
    fine-tuning, measuring), summed; empty for runs that did not record them."""
    totals: dict[str, float] = {}
    for it in iterations:
        for phase, seconds in (it.get("phase_seconds") or {}).items():
            totals[phase] = totals.get(phase, 0.0) + float(seconds)
    return totals


def measure_model(
    name: str, rows: list[dict[str, Any]], baseline: list[dict[str, Any]], work: Path,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Time the reference, the results and the width baseline of ``name`` side by side in
    one session, then each result alone with a fresh `edgekit bench` process; fill in
    ``rows`` and ``baseline``."""
    import subprocess

    from edgekit.search import make_meter, measure_artifacts

    reports = {
        r["budget"]: json.loads((work / name / r["budget"] / "netadapt.json").read_text())
        for r in rows
    }
    paths = {"reference": Path(next(iter(reports.values()))["reference"]["artifact"])}
    for budget, report in reports.items():
        paths[f"result {budget}"] = Path(report["result"]["artifact"])
    for b in baseline:  # runs saved before the artifact was recorded: its usual place
        default = work / name / "baseline" / f"width_{b['width']:g}_int8.tflite"
        paths[f"width {b['width']:g}"] = Path(b.get("artifact") or default)
    meter = make_meter(["latency"], "cpu", None, True, None, None, runs=args.runs)
    runs = args.runs * 10
    _say(
        f"{name}: timing {len(paths)} artifacts side by side ({runs} runs each, "
        f"{SESSIONS} sessions)"
    )
    sample = np.zeros((1, args.input_size, args.input_size, 3), np.float32)
    # On this host one session's ratio of two networks moves by several percent from the
    # next one's (MobileNet v1 0.5x result / reference: 0.50 to 0.55 in five consecutive
    # sessions): the median of a few sessions, and their spread, are what is reported.
    sessions = [measure_artifacts(paths, meter, runs, sample) for _ in range(SESSIONS)]
    side = {k: {"p50": float(np.median([s[k]["p50"] for s in sessions]))} for k in paths}
    for b in baseline:
        b["latency_ms"] = side[f"width {b['width']:g}"]["p50"]
    for r in rows:
        table = work / name / r["budget"] / "profile.json"  # the table the search used
        if table.is_file():
            t = json.loads(table.read_text())
            r["table_built"] = (
                f"built {t['built']['date']}, calibration scale {t['calibration']['scale']:g}"
            )
        r["side_ms"] = side[f"result {r['budget']}"]["p50"]
        r["side_ref_ms"] = side["reference"]["p50"]
        r["side_ratios"] = [
            s[f"result {r['budget']}"]["p50"] / s["reference"]["p50"] for s in sessions
        ]
        own = reports[r["budget"]].get("side_by_side") or {}
        if own.get("latency_ms"):  # the search's own final timing, reference and result alone
            ms = own["latency_ms"]
            r["own_ratio"] = ms["result"]["p50"] / ms["reference"]["p50"]
        r["base_acc"] = baseline_accuracy_at(baseline, r["side_ms"])
        # Fresh processes, as a user would time the artifact. On this host a process runs in
        # one of two speed states for its whole life, about 0.1 ms per inference apart
        # (MobileNet v1 reference 1.28 or 1.39 ms, a 0.5x result 0.645 or 0.745 ms): one
        # process is a coin toss, so several are timed, the reference's too, alternating.
        _say(f"{name} {r['budget']}: {FRESH} x edgekit bench of the result and the reference")
        fresh: dict[str, list[dict[str, float]]] = {"result": [], "reference": []}
        for _ in range(FRESH):
            for key, path in (("result", paths[f"result {r['budget']}"]), ("reference", paths["reference"])):  # fmt: skip
                bench = subprocess.run(
                    [
                        sys.executable, "-m", "edgekit", "bench", str(path), "--runs", str(runs),
                        "--warmup", "50", "--threads", "2", "--json",
                    ],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                fresh[key].append(json.loads(bench.stdout)["latency_ms"])
        p50s = [float(x["p50"]) for x in fresh["result"]]
        r["p50"] = float(np.median(p50s))
        r["p50_range"] = (min(p50s), max(p50s))
        r["fresh_p50s"] = p50s
        r["fresh_ref"] = [float(x["p50"]) for x in fresh["reference"]]
        r["noise"] = float(np.median([(float(x["p90"]) - float(x["p50"])) / float(x["p50"]) for x in fresh["result"]]))  # fmt: skip


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that shaped a run (not where it was written or how it is re-read)."""
    skip = {
        "out", "no_write", "section", "from_run", "report_only", "runs", "workers",
        "baseline_from",
    }  # fmt: skip
    return {k: v for k, v in vars(args).items() if k not in skip}


def judge(r: dict[str, Any]) -> None:
    """Whether a result met its budget, two ways. Absolute: the fresh p50 at or under the
    budget in ms within its noise; that budget was set from a timing of the reference up to
    half an hour earlier, possibly in the host's other speed state. Relative (budgets given
    as a share of the reference): the median fresh p50 of the result over the median fresh
    p50 of the reference, timed alternately in the same minutes, at or under the share
    within the same noise."""
    r["met"] = r["p50"] <= r["budget_ms"] * (1 + r["noise"])
    r["fresh_ratio"] = r["met_ratio"] = None
    if r.get("fresh_ref"):
        r["fresh_ratio"] = r["p50"] / float(np.median(r["fresh_ref"]))
        from edgekit.search import parse_budget

        share = parse_budget(str(r["budget"])).relative
        if share is not None:
            r["met_ratio"] = r["fresh_ratio"] <= share * (1 + r["noise"])


def borrowed_widths(
    other: Path | None, name: str, ours: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The baseline widths another run (``--baseline-from``) trained for ``name``, if its
    input size, data and zoo width are this run's (``ours``: :func:`settings`); one line and
    exit if they are not. A width's training depends on those, its model, epochs, seed and
    teacher (checked width by width in :func:`train_baseline`), and on no search setting.
    A model the other run did not train has nothing to lend."""
    if other is None:
        return {}
    path = other / name / "progress.json"
    if not path.is_file():
        _say(f"--baseline-from {other}: it did not train {name}; its widths train here")
        return {}
    try:
        theirs = json.loads(path.read_text())
    except ValueError as err:
        raise SystemExit(f"--baseline-from {other}: {path} is not JSON ({err})") from None
    settings_ = theirs.get("settings")
    if not isinstance(settings_, dict):
        raise SystemExit(
            f"--baseline-from {other}: {path} holds no settings to check its widths against; "
            "give a run made since they are kept"
        )
    differ = [k for k in ("input_size", "data", "width") if settings_.get(k) != ours[k]]
    if differ:
        raise SystemExit(
            f"--baseline-from {other}: its widths were trained with another "
            + ", ".join(f"{k} ({settings_.get(k)}, here {ours[k]})" for k in differ)
            + "; give a run with this run's"
        )
    return dict(theirs.get("baseline", {}))


def train_baseline(
    zoo: Any,
    data: Any,
    work: Path,
    epochs: int,
    args: argparse.Namespace,
    teacher: Any = None,
    trained: dict[str, dict[str, Any]] | None = None,
    save: Any = None,
    borrowed: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """The same architecture at uniform widths, each trained ``epochs`` epochs from scratch
    as a search's own baseline is (:func:`edgekit.search.train_width`; with ``teacher``,
    distilled from it every epoch), with its int8 artifact and test accuracy.

    ``trained`` (the run's progress.json keeps it) holds each width this run trained, by
    width; one trained exactly as it would be now (epochs, seed, distillation) whose
    artifact is still there is taken as it is, so a run started again, or given one more
    width, trains only what it lacks. Each width's seed depends on the run's seed and the
    width alone, so a width added later trains as it would have in the first invocation.
    ``borrowed`` (:func:`borrowed_widths`) holds another run's widths: one of them trained
    exactly as this run would, undistilled (a teacher is a run's own reference), with its
    artifact in place, is taken into ``trained`` as it is, its origin recorded.
    ``save`` is called after each new or borrowed width. Returns the baseline (a borrowed
    width says ``from`` where) and the seconds of this run's training it took, its reused
    widths included, borrowed ones not."""
    from edgekit.search import derive_seed, make_meter, train_width

    trained = {} if trained is None else trained
    meter = None
    baseline, seconds = [], 0.0
    for multiplier in (float(w) for w in args.baseline_widths.split(",")):
        width = round(zoo.width * multiplier, 6)
        how = {
            "epochs": epochs,
            "seed": derive_seed(args.seed, "baseline", width),
            "distilled": teacher is not None,
        }
        entry = trained.get(f"{width:g}")
        other = (borrowed or {}).get(f"{width:g}")
        if _usable(entry, how):
            where = (
                f"as {entry['from']} trained it" if "from" in entry else "as this run trained it"
            )
            _say(f"baseline: width {width:g} {where} ({entry['accuracy']:.4f})")
        elif teacher is None and _usable(other, how):
            entry = {**other, "from": other.get("from", str(args.baseline_from))}
            trained[f"{width:g}"] = entry
            if save is not None:
                save()
            _say(
                f"baseline: width {width:g} as {entry['from']} trained it ({entry['accuracy']:.4f})"
            )
        else:
            if meter is None:
                meter = make_meter(
                    ["latency"], "cpu", None, True, work, data.x_train, runs=args.runs
                )
            _, got = train_width(
                zoo, multiplier, epochs, data, meter, work, _say, seed=args.seed,
                teacher=teacher,
            )  # fmt: skip
            entry = {
                "width": got["width"],
                "accuracy": got["accuracy"],
                "artifact": got["artifact"],
                **how,
                "seconds": got["seconds"],
            }
            trained[f"{width:g}"] = entry
            if save is not None:
                save()
        baseline.append(
            {k: entry[k] for k in ("width", "accuracy", "artifact", "from") if k in entry}
        )
        if "from" not in entry:
            seconds += float(entry["seconds"])
    return baseline, seconds


def _usable(entry: dict[str, Any] | None, how: dict[str, Any]) -> bool:
    """Whether a recorded width was trained as ``how`` says and its artifact is there."""
    return (
        entry is not None
        and all(entry.get(k) == v for k, v in how.items())
        and bool(entry.get("artifact"))
        and Path(entry["artifact"]).is_file()
    )


def fresh_cell(r: dict[str, Any]) -> str:
    """The fresh p50: a median and its range, or (older runs) one process's."""
    if r.get("p50_range"):
        low, high = r["p50_range"]
        return f"{r['p50']:.3f} ({low:.3f}-{high:.3f})"
    return f"{r['p50']:.3f}"


def ratio_cell(r: dict[str, Any]) -> str:
    if r.get("fresh_ratio") is None:
        return "n/a"
    return f"{r['p50']:.3f} / {float(np.median(r['fresh_ref'])):.3f}: {r['fresh_ratio']:.3f}"


def met_cell(r: dict[str, Any]) -> str:
    def word(v: bool | None) -> str:
        return "n/a" if v is None else ("yes" if v else "NO")

    return f"{word(r['met'])} / {word(r.get('met_ratio'))}"


def results_section(
    rows: list[dict[str, Any]],
    baselines: dict[str, list[dict[str, Any]]],
    data: Any,
    args: argparse.Namespace,
) -> str:
    from edgekit.search import NetAdaptOptions

    size = args.input_size
    scratch = getattr(args, "final", "fine-tune") == "scratch"
    fixed = getattr(args, "final_epochs", None) if scratch else None
    lines = [
        f"## {args.section}: NetAdapt vs width multipliers on --target cpu (LiteRT int8, "
        f"2 threads), seed {args.seed}",
        "",
        f"Zoo models at {size}x{size}, width {args.width:g}, trained {args.train_epochs} "
        f"epochs on {data.name} ({len(data.y_train)} training, {len(data.y_test)} held-out "
        f"test images{'; ' + args.data_about if getattr(args, 'data_about', None) else ''}). "
        f"NetAdapt: K = {args.proposals} proposals per iteration"
        + (
            f" (the K best of every group's proposal scored unfine-tuned, BatchNorm statistics "
            f"re-estimated on {args.screen_batches} batches)"
            if getattr(args, "screen_batches", 0)
            else " (the K groups that cost most)"
        )
        + ", "
        f"{args.short_steps} batches of fine-tuning each (learning rate {args.learning_rate:g}"
        + (
            f"; BatchNorm statistics re-estimated on {args.bn_batches} batches after it"
            if args.bn_batches
            else ""
        )
        + (
            "), no long fine-tuning: with --final scratch each result is its searched "
            "architecture trained from fresh weights with the baseline's recipe, "
            + (
                f"for {fixed} epochs (--final-epochs), the same as every width of the baseline"
                if fixed
                else "for as many epochs as a fine-tuned result's weights would have seen (below)"
            )
            if scratch
            else f"), {args.long_epochs} long epochs"
        )
        + (
            f" distilled from the reference (T = {NetAdaptOptions.distill_temperature:g}, "
            f"labels weighted {NetAdaptOptions.distill_lam:g})"
            if getattr(args, "distill", False)
            else ""
        )
        + ", "
        f"reduction schedule {args.init_fraction:g} x {args.decay:g}^i of the reference's "
        "latency. Proposals are chosen from the cpu target's table for the input size "
        "(named below); each chosen network is timed side by side with the reference and "
        "the table rescaled to agree. Budgets are shares of the reference's measured "
        "latency at the start of the search. Measured after every search and training was "
        f"done: 'side by side' times the reference, the results and the width baseline in "
        f"alternating rounds of one session ({args.runs * 10} runs each), {SESSIONS} times: "
        "the median p50s, the median of the sessions' ratios, and in brackets the lowest "
        "and highest of them; 'fresh p50' is a "
        f"separate `edgekit bench` process on the result's int8 artifact ({args.runs * 10} "
        f"runs; the median of {FRESH} processes, their lowest and highest in brackets; a "
        "process on this host runs in one of two speed states about 0.1 ms per inference "
        "apart, so the reference's fresh p50s are listed below too); 'met' is judged two "
        "ways, each within the fresh timings' (p90-p50)/p50 noise: ms, the median fresh p50 "
        "at or under the budget in ms (set from the reference's timing at the start of the "
        "search, up to half an hour earlier); ratio, the median fresh p50 of the result over "
        f"that of the reference ({FRESH} processes each, alternating) at or under the share; "
        "'baseline acc.' "
        "is the width multipliers' test accuracy at the result's side-by-side latency "
        f"(interpolated); one test image is {100 / len(data.y_test):.2f} points of accuracy. "
        + (
            f"Every width of the baseline is trained {fixed} epochs from fresh weights, as "
            "long as each result"
            if fixed
            else "The baseline is trained once per model for as many epochs as the "
            "longer search's result saw (reference training + short fine-tunings + long "
            "fine-tuning"
            + ("; a scratch-trained result trains the count of its own search" if scratch else "")
            + "), so the shorter search's baseline trained longer than its result"
        )
        + (
            "; with --distill every epoch of every width learns from the same reference "
            "(distilled with the same settings as the long fine-tuning, at the learning rate "
            "of plain training)"
            + (
                ", as does every epoch of each scratch-trained result"
                if scratch
                else ", which favours the baseline: NetAdapt's result learnt from it only in "
                "its long fine-tuning"
            )
            if getattr(args, "distill", False)
            else ""
        )
        + f". Host: {host_line()}."
        + (f" The {args.input_size_note}." if getattr(args, "input_size_note", None) else ""),
        "",
        "| model | budget | reference p50 ms (acc.) | budget ms | fresh p50 ms | fresh: result "
        "/ reference | met: ms / ratio (noise) | side by side: result / reference | MACs "
        "ratio | result acc. | baseline acc. | iterations | search wall min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = "n/a" if r["base_acc"] is None else f"{r['base_acc']:.4f}"
        # The median of the sessions' ratios (each session times both in one machine state).
        ratios = r.get("side_ratios") or [r["side_ms"] / r["side_ref_ms"]]
        ratio = float(np.median(ratios))
        lines.append(
            f"| {r['model']} | {r['budget']} | {r['ref_ms']:.3f} ({r['ref_acc']:.4f}) | "
            f"{r['budget_ms']:.3f} | {fresh_cell(r)} | {ratio_cell(r)} | {met_cell(r)} "
            f"({r['noise']:.1%}) | {r['side_ms']:.3f} / {r['side_ref_ms']:.3f}: "
            f"{ratio:.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | {r['macs_ratio']:.3f} | "
            f"{r['acc']:.4f} | {base} | "
            f"{r['iterations']} ({r['status']}) | {r['wall'] / 60:.1f} |"
        )
    lines.append("")
    for name, baseline in baselines.items():
        model_rows = [r for r in rows if r["model"] == name]
        pts = ", ".join(
            f"width {b['width']:g}: {b['latency_ms']:.3f} ms / {b['accuracy']:.4f}"
            for b in baseline
        )
        lent_note = ""
        for origin in sorted({b["from"] for b in baseline if "from" in b}):
            widths = ", ".join(f"{b['width']:g}" for b in baseline if b.get("from") == origin)
            lent_note += f"; widths {widths} as the run in {origin} trained them"
        lines.append(
            f"- {name}: reference trained in {model_rows[0]['train_s'] / 60:.1f} min; width "
            f"baseline ({max(r['epochs'] for r in model_rows)} epochs each, "
            f"{model_rows[0]['baseline_s'] / 60:.1f} min here{lent_note}): {pts}; "
            "search latency: "
            f"{model_rows[0]['latency_from']}"
            + (f", {model_rows[0]['table_built']}" if model_rows[0].get("table_built") else "")
        )
        for r in model_rows:
            chain = ", ".join(f"{g} {a}->{b}" for g, a, b in r["history"])
            own = (
                f"; the search's own final timing, result and reference alone: {r['own_ratio']:.3f}"
                if r.get("own_ratio") is not None
                else ""
            )
            if r.get("fresh_p50s"):  # runs before this was kept have only the range
                own += "; the result's fresh p50s: " + ", ".join(
                    f"{v:.3f}" for v in r["fresh_p50s"]
                )
            if r.get("fresh_ref"):
                own += "; the reference's fresh p50s: " + ", ".join(
                    f"{v:.3f}" for v in r["fresh_ref"]
                )
            if r.get("phases"):
                own += (
                    f"; the {len(r['history'])} iterations' {sum(r['phases'].values()) / 60:.1f} min: "
                    + ", ".join(
                        f"{phase.replace('_', '-')} {seconds / 60:.1f}"
                        for phase, seconds in r["phases"].items()
                    )
                )
            if (r.get("final") or {}).get("how") == "scratch":
                own += (
                    f"; trained from fresh weights {r['final']['epochs']} epochs in "
                    f"{r['final']['seconds'] / 60:.1f} min (in the search wall time)"
                )
            lines.append(
                f"  - {r['budget']} chose: {chain}{own} (chart: [{args.section}/{name}_"
                f"{r['budget']}.png]({args.section}/{name}_{r['budget']}.png))"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
