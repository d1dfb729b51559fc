"""Every built-in compression recipe on the default zoo model, next to the uncompressed one.

Trains (or loads from the cache) the embedded default model (MobileNetV2 width 0.5 at 32x32,
digits), runs each built-in recipe through the same code as `edgekit compress`, and reports
LiteRT accuracy on the held-out test split, raw and gzipped artifact size, and p50 latency of
the reference and the result timed side by side. The distillation row also trains the same
student without the teacher, same epochs, over three seeds. Each recipe's pass/fail against
the compression issue's thresholds is printed. With --deploy, each result then goes through
`edgekit deploy --target cpu` (every format, validated and timed) in its own section. Results
go to benchmarks/RESULTS.md.

    python benchmarks/compression.py [--threads 1] [--runs 300] [--recipes prune50,binary]
                                     [--deploy]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _results import host_line, write_section

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

RECIPES = ["prune50", "prune80-pqat", "cluster16", "pcqat", "channels50", "binary", "distill"]


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _check(name: str, report: dict[str, Any]) -> tuple[str, bool | None]:
    """The issue's threshold for this recipe, and whether the run met it."""
    ref, res, d = report["reference"], report["result"], report["delta"]
    drop = 100 * (ref["accuracy"] - res["accuracy"])
    if name == "prune50":
        return "drop <= 1 pt, gzip <= 0.8x", drop <= 1 and d["size_gzip_ratio"] <= 0.8
    if name == "cluster16":
        return "drop <= 1 pt, gzip <= 0.5x", drop <= 1 and d["size_gzip_ratio"] <= 0.5
    if name == "channels50":
        return "drop <= 2 pt, p50 <= 0.7x", drop <= 2 and d["p50_ratio"] <= 0.7
    if name == "binary":
        ratio = report["state"]["binary"]["ratio"]
        return "packed <= 1/25 of float32", ratio <= 1 / 25
    return "", None


def _distill_vs_plain(teacher: Any, data: Any, seeds: list[int], epochs: int) -> dict[str, Any]:
    """Train the distill recipe's student with and without the teacher, same epochs."""
    from edgekit.compress._steps import StepContext
    from edgekit.compress.distill import build_student, distill
    from edgekit.compress.recipe import load_recipe

    opts = dict(load_recipe("distill").steps[0].options)
    rows = []
    for seed in seeds:
        ctx = StepContext(data=data, seed=seed)
        student = build_student(opts["student"], teacher, ctx)
        plain = build_student(opts["student"], teacher, ctx)
        plain.set_weights(student.get_weights())  # same initial weights for both
        t0 = time.perf_counter()
        kd = distill(
            student,
            teacher,
            ctx,
            epochs=epochs,
            temperature=opts["temperature"],
            lam=opts["lam"],
            learning_rate=opts["learning_rate"],
        )
        kd_s = time.perf_counter() - t0
        ctx.fine_tune(plain, epochs, learning_rate=opts["learning_rate"])
        rows.append((seed, ctx.accuracy(kd, "test"), ctx.accuracy(plain, "test"), kd_s))
        _say(f"seed {seed}: distilled {rows[-1][1]:.4f}, plain {rows[-1][2]:.4f}")
    return {
        "rows": rows,
        "kd_mean": statistics.mean(r[1] for r in rows),
        "plain_mean": statistics.mean(r[2] for r in rows),
        "options": opts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the distillation comparison")
    ap.add_argument("--deploy", action="store_true", help="deploy --target cpu every result")
    args = ap.parse_args()

    from edgekit.compress._run import CompressRequest, compress
    from edgekit.compress._steps import StepContext
    from edgekit.compress.recipe import load_recipe
    from edgekit.data import load_dataset
    from edgekit.deploy import DEFAULT_MODEL, SilentProgress, build_default_model

    size = DEFAULT_MODEL.input_size
    data = load_dataset("digits", (size, size, 3))
    model, _ = build_default_model(data, SilentProgress())
    work = Path(tempfile.mkdtemp(prefix="edgekit-compress-"))
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    reports: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"recipe {name} ...", file=sys.stderr, flush=True)
        recipe = load_recipe(name)
        ctx = StepContext(data=data, seed=0, progress=_say)
        req = CompressRequest(recipe=recipe, out=work / name, threads=args.threads, runs=args.runs)
        t0 = time.perf_counter()
        reports[name] = compress(model, "default", data, req, ctx)
        reports[name]["wall_s"] = time.perf_counter() - t0

    if args.deploy:
        _deploy_results(reports, work)

    kd = None
    if "distill" in names:
        print("distillation vs plain training of the same student ...", file=sys.stderr)
        steps = load_recipe("distill").steps[0].options
        seeds = [int(s) for s in args.seeds.split(",")]
        kd = _distill_vs_plain(model, data, seeds, steps["epochs"])

    lines = [
        "## compression: every built-in recipe on the default model",
        "",
        f"Default model ({DEFAULT_MODEL.name} width {DEFAULT_MODEL.width}, {size}x{size}, "
        f"trained {DEFAULT_MODEL.epochs} epochs on digits; {len(data.y_test)} held-out test "
        "images). Each row: the recipe run by the same code as `edgekit compress`; reference "
        "and result converted to the recipe's artifact, evaluated in LiteRT, and timed side by "
        f"side ({args.runs} runs in 5 alternating rounds, {args.threads} thread(s)). "
        f"Host: {host_line()}.",
        "",
        "| recipe | artifact | accuracy ref -> result | size ref -> result | gzip ref -> "
        "result (ratio) | p50 ms ref -> result (ratio) | sparsity | MACs kept | threshold | "
        "met | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failed = []
    for name, r in reports.items():
        ref, res, d = r["reference"], r["result"], r["delta"]
        rule, ok = _check(name, r)
        if ok is False:
            failed.append(name)
        lines.append(
            f"| {name} | {res['format']} | {ref['accuracy']:.4f} -> {res['accuracy']:.4f} "
            f"({d['accuracy_points']:+.2f}) | {ref['size_bytes'] / 1024:.1f} -> "
            f"{res['size_bytes'] / 1024:.1f} KiB | {ref['size_gzip_bytes'] / 1024:.1f} -> "
            f"{res['size_gzip_bytes'] / 1024:.1f} KiB ({d['size_gzip_ratio']:.3f}) | "
            f"{ref['latency_ms']['p50']:.4f} -> {res['latency_ms']['p50']:.4f} "
            f"({d['p50_ratio']:.3f}) | {res['sparsity']:.3f} | {res['macs'] / ref['macs']:.3f} | "
            f"{rule} | {'' if ok is None else ('yes' if ok else 'NO')} | {r['wall_s']:.0f} |"
        )
    extra = []
    if "binary" in reports:
        b = reports["binary"]["state"]["binary"]
        extra.append(
            f"- binary: binarized weights packed at 1 bit take {b['packed_bytes']:,} bytes "
            f"against {b['float32_bytes']:,} bytes as float32 (ratio 1/{1 / b['ratio']:.1f}); "
            "the TFLite artifact holds them as float +-1, so it is not faster: a speed-up needs "
            "a binary-kernel engine."
        )
    for name in ("cluster16", "pcqat"):
        if name in reports and "codebook" in reports[name]["state"]:
            c = reports[name]["state"]["codebook"]
            extra.append(f"- {name}: codebook storage {_codebook_line(c)}")
    if kd is not None:
        seeds_txt = ", ".join(f"seed {s}: {a:.4f} vs {p:.4f}" for s, a, p, _ in kd["rows"])
        ok = kd["kd_mean"] > kd["plain_mean"]
        if not ok:
            failed.append("distill")
        o = kd["options"]
        extra.append(
            f"- distill: student '{o['student']}' trained {o['epochs']} epochs with the default "
            f"model as teacher (T={o['temperature']:g}, lambda={o['lam']:g}) vs the same student "
            f"from the same initial weights trained without it: mean test accuracy "
            f"{kd['kd_mean']:.4f} vs {kd['plain_mean']:.4f} ({seeds_txt}); distillation "
            f"{'beats' if ok else 'does NOT beat'} plain training."
        )
    lines += ["", *extra]
    for name, r in reports.items():
        for note in r["notes"]:
            lines.append(f"- note ({name}): {note}")
    body = "\n".join(lines)
    print(body)
    write_section("compression", body)
    if failed:
        print(f"thresholds not met: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def _deploy_results(reports: dict[str, dict[str, Any]], work: Path) -> None:
    """`edgekit deploy --target cpu` on every recipe's output model, one table."""
    from edgekit.deploy import DeployRequest, deploy

    lines = [
        "## recipe_deploy: `edgekit deploy --target cpu` on every built-in recipe's output",
        "",
        "Each recipe's output `.keras` (from the compression run above) deployed with the "
        "default options: every cpu format built, validated on the held-out test split, and "
        "timed side by side (100 runs, 2 threads). 'twin' names the float twin the formats "
        "were converted from (fake_quant: every format but tflite_int8; binary: every "
        f"format). Host: {host_line()}.",
        "",
        "| recipe | Keras acc. | twin | formats built | accuracy per format | failed checks "
        "| selected | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        print(f"deploy {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rep = deploy(DeployRequest("cpu", Path(r["result"]["model"]), out=work / f"{name}-cpu"))
        arts = rep["artifacts"]
        twin = (rep.get("float_twin") or {}).get("kind", "-")
        accs = ", ".join(f"{a['format']} {a['accuracy']:.4f}" for a in arts)
        failed = ", ".join(a["format"] for a in arts if not a["check"]["passed"]) or "none"
        lines.append(
            f"| {name} | {rep['reference']['accuracy']:.4f} | {twin} | {len(arts)}/8 | {accs} "
            f"| {failed} | {rep['selected']} | {time.perf_counter() - t0:.0f} |"
        )
    body = "\n".join(lines)
    print(body)
    write_section("recipe_deploy", body)


def _codebook_line(c: dict[str, Any]) -> str:
    keys = ("codebook_bytes", "index_bytes", "total_bytes", "float32_bytes", "ratio")
    return ", ".join(f"{k} {c[k]}" for k in keys if k in c)


if __name__ == "__main__":
    main()
