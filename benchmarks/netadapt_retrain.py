"""More training seeds for a saved `benchmarks/netadapt.py --final scratch` run.

On digits one training run of a MobileNet is worth about plus or minus one test image (the
width baseline's own accuracies are not ordered by width), as much as the margins that
decide whether a NetAdapt result beats the baseline. This script takes a finished run's
folder (`--out` of netadapt.py, with its rows.json) and trains each searched architecture
and each width of the baseline again from fresh weights, with the run's recipe and epochs
and with other seeds, so that the comparison rests on the mean of several trainings per
network rather than on one. The architectures, and so their latencies (measured side by
side in the saved run), stay as they were: nothing is searched or timed again.

Seed k of a run with seed s trains as a run with seed derive_seed(s, "repeat", k) would
have: the result from derive_seed(that, "scratch"), each width from
derive_seed(that, "baseline", width). Seed 0 is the run's own training (its saved
accuracies). Every training is recorded in the folder's retrain.json as it ends, so a killed
run goes on where it stopped when started again.

    python benchmarks/netadapt_retrain.py RUN_DIR --section NAME --source RUN_SECTION \
        [--seeds 3] [--widths-from OTHER_RUN] [--no-write]

Two runs with the same seed, input size, data and epochs train the same baseline widths
whatever their searches did; `--widths-from` takes another run's width trainings from its
retrain.json (each recorded with where it came from) so that only the new results train.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section
from netadapt import baseline_accuracy_at, data_about

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from edgekit._io import write_json_atomic

RECORD = "retrain.json"


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "run",
        type=Path,
        help="a benchmarks/netadapt.py --out folder, or the run.json.gz the run left next to "
        "its charts (benchmarks/<section>/) for when that folder is gone",
    )
    ap.add_argument(
        "--seeds", type=int, default=3, help="trainings per network, the run's own included"
    )
    ap.add_argument("--section", required=True, help="the RESULTS.md section to write")
    ap.add_argument(
        "--source", required=True, help="the RESULTS.md section of the run, for the text"
    )
    ap.add_argument(
        "--widths-from",
        type=Path,
        default=None,
        help="another run (folder or run.json.gz) whose retrain.json holds trainings of the "
        "same baseline widths: each one trained exactly as this run's would be (same seed, "
        "input size, data, epochs, undistilled) is taken instead of trained again",
    )
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args()
    try:
        saved, folder = _load_run(args.run)
        other = None if args.widths_from is None else _load_run(args.widths_from)
    except ValueError as err:
        ap.error(str(err))
    run = saved.get("args", {})
    if run.get("distill") and args.run.is_file():
        ap.error(
            f"{args.run}: a --distill run trains from its reference's weights, which the record "
            "does not keep; give the run's --out folder"
        )
    if run.get("final") != "scratch":
        ap.error(
            f"{args.run}: its results were fine-tuned (--final {run.get('final', 'fine-tune')}), "
            "not trained from fresh weights; only a --final scratch run's results can be "
            "trained again with other seeds"
        )
    if args.seeds < 2:
        ap.error(f"--seeds {args.seeds}: give at least 2 (the run's own training is the first)")
    if any("side_ms" not in r for r in saved["rows"]):
        ap.error(
            f"{args.run}: the run did not finish its final timing; run netadapt.py to its end first"
        )

    from edgekit.data import load_dataset

    size = int(run["input_size"])
    data = load_dataset(run.get("data", "digits"), (size, size, 3))
    record_path = folder / RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record and record.get("source_seed") != run["seed"]:
        ap.error(
            f"{record_path}: recorded for another run (seed {record.get('source_seed')}); remove it"
        )
    record.setdefault("source_seed", run["seed"])
    record.setdefault("trainings", {})
    borrowed = {}
    if other is not None:
        try:
            borrowed = borrowed_widths(saved, *other)
        except ValueError as err:
            ap.error(f"--widths-from {args.widths_from}: {err}")
    t0 = time.perf_counter()
    for k in range(1, args.seeds):
        for key, train in _trainings(saved, run, data, folder, k):
            if key in record["trainings"]:
                continue
            if key in borrowed:
                _say(f"seed {k}: {key} as {args.widths_from} trained it")
                record["trainings"][key] = {"from": str(args.widths_from), **borrowed[key]}
                write_json_atomic(record_path, record)
                continue
            _say(f"seed {k}: {key}")
            started = time.perf_counter()
            record["trainings"][key] = {
                **train(),
                "seconds": round(time.perf_counter() - started, 1),
            }
            write_json_atomic(record_path, record)
    seconds = time.perf_counter() - t0
    body = results_section(saved, record, data, args, seconds)
    print(body)
    if not args.no_write:
        write_section(args.section, body)


def _load_run(path: Path) -> tuple[dict[str, Any], Path]:
    """A run's saved rows and the folder its retrain.json belongs in, from its --out folder
    or its run.json.gz; ValueError saying what is wrong."""
    if path.is_file():
        try:
            saved = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a run record written by netadapt.py ({err})") from None
        if "architectures" not in saved:
            raise ValueError(f"{path}: holds no architectures; it is not a netadapt.py run record")
        return saved, path.parent
    if not (path / "rows.json").is_file():
        raise ValueError(
            f"{path}: no rows.json there; give the --out folder of a finished netadapt.py run, "
            "or the run.json.gz next to its charts"
        )
    return json.loads((path / "rows.json").read_text()), path


def borrowed_widths(
    saved: dict[str, Any], theirs: dict[str, Any], folder: Path
) -> dict[str, dict[str, Any]]:
    """The trainings of baseline widths in another run's retrain.json (``theirs`` saved in
    ``folder``) that are exactly the ones this run (``saved``) would train: a width's
    training depends on the run's seed, input size, data and zoo width, its epochs and,
    under --distill, the run's own reference, and on nothing the search did. ValueError when
    the runs differ in one of those."""
    ours, other = saved.get("args", {}), theirs.get("args", {})
    differ = [k for k in ("seed", "input_size", "data", "width") if ours.get(k) != other.get(k)]
    if differ:
        raise ValueError(
            "trained with another "
            + ", ".join(f"{k} ({other.get(k)}, here {ours.get(k)})" for k in differ)
        )
    if ours.get("distill") or other.get("distill"):
        raise ValueError("a --distill run's widths learn from that run's own reference")
    from edgekit.search import derive_seed

    record_path = folder / RECORD
    if not record_path.is_file():
        raise ValueError(f"no {RECORD} in {folder}")
    try:
        record = json.loads(record_path.read_text())
    except ValueError as err:
        raise ValueError(f"{record_path} is not JSON ({err})") from None
    if record.get("source_seed") != other.get("seed"):
        raise ValueError(
            f"{record_path} was recorded for a run of seed {record.get('source_seed')}, not "
            f"the run beside it (seed {other.get('seed')})"
        )
    got = {}
    for key, entry in record.get("trainings", {}).items():
        match = re.fullmatch(r"(.+) width ([0-9.]+) seed ([0-9]+)", key)
        if match is None or match[1] not in saved["baselines"]:
            continue
        name, width, k = match[1], float(match[2]), int(match[3])
        seed = derive_seed(derive_seed(int(ours["seed"]), "repeat", k), "baseline", width)
        if entry.get("epochs") == _baseline_epochs(saved, name) and entry.get("seed") == seed:
            got[key] = entry
    return got


def _trainings(saved: dict[str, Any], run: dict[str, Any], data: Any, folder: Path, k: int):
    """(key, train) for each network to train with seed ``k``: each result, then each width."""
    from edgekit.models._io import load_keras_model
    from edgekit.search import ZooSpec, derive_seed, make_meter, train_from_scratch, train_width
    from edgekit.train import evaluate_probs

    seed = derive_seed(run["seed"], "repeat", k)

    def accuracy(model: Any) -> float:
        probs = evaluate_probs(model, data.x_test)
        return round(float(np.mean(np.argmax(probs, axis=1) == data.y_test)), 6)

    def teacher(model_dir: Path) -> Any:
        if not run.get("distill"):
            return None
        budget_dir = next(
            p for p in sorted(model_dir.iterdir()) if (p / "reference.keras").is_file()
        )
        return load_keras_model(budget_dir / "reference.keras")

    for r in saved["rows"]:

        def result(r: dict[str, Any] = r) -> dict[str, Any]:
            searched = _searched(saved, folder, r)
            s = derive_seed(seed, "scratch")
            model = train_from_scratch(
                searched, data, r["final"]["epochs"], s, teacher=teacher(folder / r["model"])
            )
            return {"seed": s, "epochs": r["final"]["epochs"], "accuracy": accuracy(model)}

        yield f"{r['model']} {r['budget']} seed {k}", result
    for name, widths in saved["baselines"].items():
        epochs = _baseline_epochs(saved, name)
        zoo = ZooSpec(name, float(run.get("width", 1.0)), int(run["input_size"]), epochs)
        for b in widths:

            def width(b: dict[str, Any] = b, name: str = name, zoo: Any = zoo) -> dict[str, Any]:
                meter = make_meter(["macs"], None, None, False, None, None)
                multiplier = b["width"] / zoo.width
                with tempfile.TemporaryDirectory(prefix="edgekit-retrain-") as work:
                    _, entry = train_width(
                        zoo, multiplier, zoo.train_epochs, data, meter, Path(work), _say,
                        seed=seed, teacher=teacher(folder / name),
                    )  # fmt: skip
                return {
                    "seed": entry["seed"],
                    "epochs": zoo.train_epochs,
                    "accuracy": entry["accuracy"],
                }

            yield f"{name} width {b['width']:g} seed {k}", width


def _searched(saved: dict[str, Any], folder: Path, row: dict[str, Any]) -> Any:
    """A result's architecture: its saved model in a run folder, else the record's config."""
    import edgekit.models  # noqa: F401  (registers edgekit's custom layers)
    from edgekit._keras import keras
    from edgekit.models._io import check_classifier, load_keras_model

    path = folder / row["model"] / row["budget"] / "result.keras"
    if path.is_file():
        return load_keras_model(path)
    key = f"{row['model']} {row['budget']}"
    config = saved.get("architectures", {}).get(key)
    if config is None:
        raise SystemExit(f"{folder}: neither {path.name} nor a recorded architecture for {key}")
    if _has_lambda(config):  # a config runs code only through Lambda layers
        raise SystemExit(f"{folder}: the architecture of {key} holds a Lambda layer; refused")
    model = keras.models.model_from_json(json.dumps(config))
    check_classifier(model, key)
    return model


# Layers whose config names code to run: Python (Lambda) or any TensorFlow function by its
# name (TFOpLambda, SlicingOpLambda: what tf.keras records for a tf.* call on a tensor).
LAMBDA_CLASSES = {"Lambda", "TFOpLambda", "SlicingOpLambda"}


def _has_lambda(config: Any) -> bool:
    """Whether a Keras config holds a Lambda-like layer anywhere (nested models included)."""
    if isinstance(config, dict):
        return config.get("class_name") in LAMBDA_CLASSES or any(
            _has_lambda(v) for v in config.values()
        )
    if isinstance(config, list):
        return any(_has_lambda(v) for v in config)
    return False


def results_section(
    saved: dict[str, Any], record: dict[str, Any], data: Any, args: argparse.Namespace,
    seconds: float,
) -> str:  # fmt: skip
    """The section: each width's and each result's accuracy per seed and their means, and
    each result against the baseline at its latency, seed by seed and on the means."""
    run, trainings, seeds = saved["args"], record["trainings"], args.seeds
    own = [t for t in trainings.values() if "from" not in t]
    recorded = sum(t.get("seconds", 0.0) for t in own)
    lent = sorted({t["from"] for t in trainings.values() if "from" in t})
    image = 1.0 / len(data.y_test)
    lines = [
        f"## {args.section}: {args.source} trained again with {seeds} seeds",
        "",
        f"The searched architectures and the width baseline of section `{args.source}` "
        f"(seed {run['seed']}), each trained {seeds} times from fresh weights with "
        "the run's recipe and epochs: seed 0 is the run's own training, seeds 1 to "
        f"{seeds - 1} draw other initial weights and batch orders "
        "(benchmarks/netadapt_retrain.py). Latencies are the run's side-by-side p50s: the "
        "architectures did not change. 'baseline' is the width multipliers' accuracy at the "
        "result's latency, interpolated between the two nearest widths, with each seed's "
        f"widths; one test image is {100 * image:.2f} points of accuracy "
        f"({len(data.y_test)} held-out images of {data.name}"
        + (f"; {data_about(run['data'])}" if data_about(run.get("data", "digits")) else "")
        + f"). Host: {host_line()}; the {len(own)} recorded trainings of seeds 1 to "
        f"{seeds - 1} took {recorded / 60:.0f} min ({seconds / 60:.0f} min of training in "
        "this invocation)"
        + (
            f"; {len(trainings) - len(own)} trainings of widths were taken from "
            + ", ".join(lent)
            + ", which trained them exactly as this run would have (--widths-from)"
            if lent
            else ""
        )
        + ".",
        "",
        "| network | latency ms | epochs | accuracy per seed | mean |",
        "|---|---|---|---|---|",
    ]
    per_seed: dict[str, list[dict[str, Any]]] = {}
    for name, widths in saved["baselines"].items():
        epochs = _baseline_epochs(saved, name)
        accs = {}
        for b in widths:
            got = [b["accuracy"]] + [
                trainings.get(f"{name} width {b['width']:g} seed {k}", {}).get("accuracy")
                for k in range(1, seeds)
            ]
            accs[b["width"]] = got
            lines.append(
                f"| {name} width {b['width']:g} | {b['latency_ms']:.3f} | {epochs} | "
                + ", ".join("-" if a is None else f"{a:.4f}" for a in got)
                + f" | {_mean_cell(got)} |"
            )
        per_seed[name] = [
            [{"latency_ms": b["latency_ms"], "accuracy": accs[b["width"]][k]} for b in widths]
            for k in range(seeds)
        ]
    comparison = [
        "",
        "| result | latency ms | accuracy per seed | baseline at its latency per seed | "
        "mean: result / baseline | mean difference (test images) | result >= baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in saved["rows"]:
        got = [r["acc"]] + [
            trainings.get(f"{r['model']} {r['budget']} seed {k}", {}).get("accuracy")
            for k in range(1, seeds)
        ]
        lines.append(
            f"| {r['model']} {r['budget']} result | {r['side_ms']:.3f} | {r['final']['epochs']} | "
            + ", ".join("-" if a is None else f"{a:.4f}" for a in got)
            + f" | {_mean_cell(got)} |"
        )
        base = [
            None
            if any(p["accuracy"] is None for p in points)
            else baseline_accuracy_at(points, r["side_ms"])
            for points in per_seed[r["model"]]
        ]
        done = [a is not None for a in got] == [True] * seeds and None not in base
        mean_r, mean_b = _mean(got), _mean(base)
        diff = None if mean_r is None or mean_b is None else (mean_r - mean_b) / image
        comparison.append(
            f"| {r['model']} {r['budget']} | {r['side_ms']:.3f} | "
            + ", ".join("-" if a is None else f"{a:.4f}" for a in got)
            + " | "
            + ", ".join("-" if a is None else f"{a:.4f}" for a in base)
            + f" | {_mean_cell(got)} / {_mean_cell(base)} | "
            + ("n/a" if diff is None else f"{diff:+.1f}")
            + " | "
            + (
                "(seeds missing)"
                if not done or diff is None
                else "yes"
                if diff >= -1e-9
                else "**no**"
            )
            + " |"
        )
    return "\n".join(lines + comparison)


def _baseline_epochs(saved: dict[str, Any], name: str) -> int:
    """The epochs the run trained ``name``'s baseline widths: its longest result's."""
    return max(r["epochs"] for r in saved["rows"] if r["model"] == name)


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else None


def _mean_cell(values: list[float | None]) -> str:
    mean = _mean(values)
    return "n/a" if mean is None else f"{mean:.4f}"


if __name__ == "__main__":
    main()
