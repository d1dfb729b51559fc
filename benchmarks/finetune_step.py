"""Eager against traced training steps of NetAdapt's short fine-tuning, side by side.

`edgekit.search._executor.fine_tune_steps` traces its step when steps x batch x MACs reaches
TRACE_MIN_MACS. This times the same fine-tuning (same network, data, steps and seed) both
ways in one process, alternating, for a network the rule traces (MobileNet v2 at 176 px,
the NetAdapt benchmark's) and one it keeps eager (MobileNet v2 tiny at 32 px, the tests').
Weights need no training for timing: each network is created once and every run starts
from a copy of its weights.

    python benchmarks/finetune_step.py [--steps 15] [--rounds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import host_line, write_section

CASES = (("mobilenet_v2", 176), ("mobilenet_v2_tiny", 32))


def _time(name: str, size: int, weights: list, data, steps: int, traced: bool) -> float:
    from edgekit.models import create
    from edgekit.search import _executor

    model = create(name, input_shape=(size, size, 3), classes=10)
    model.set_weights(weights)
    _executor.TRACE_MIN_MACS = 0.0 if traced else float("inf")
    t0 = time.perf_counter()
    _executor.fine_tune_steps(model, data, steps, seed=1)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args()

    import edgekit  # noqa: F401
    from edgekit.compress import count_macs
    from edgekit.data import load_dataset
    from edgekit.models import create
    from edgekit.search import _executor

    default = _executor.TRACE_MIN_MACS
    rows = []
    for name, size in CASES:
        data = load_dataset("digits", (size, size, 3))
        model = create(name, input_shape=(size, size, 3), classes=10)
        weights, macs = model.get_weights(), count_macs(model)
        chosen = _executor._traced(model, args.steps, 32)
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds):
            for traced in (False, True):
                times[traced].append(_time(name, size, weights, data, args.steps, traced))
                print(
                    f"{name} {size} px round {r + 1}: {'traced' if traced else 'eager'} "
                    f"{times[traced][-1]:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        _executor.TRACE_MIN_MACS = default
        eager, traced = statistics.median(times[False]), statistics.median(times[True])
        rows.append((name, size, macs, chosen, eager, traced))

    lines = [
        "## finetune_step: NetAdapt's short fine-tuning, eager against traced step",
        "",
        f"One process (TensorFlow's default threads), {args.steps} batches of 32 digits images "
        f"per fine-tuning, each way {args.rounds} times alternating; the median wall time "
        "(tracing included). 'rule' is what `fine_tune_steps` picks by default "
        f"(traced when steps x 32 x MACs >= {default / 1e9:.0f} G). Host: {host_line()}.",
        "",
        "| network | MACs | rule | eager s | traced s | traced / eager |",
        "|---|---|---|---|---|---|",
    ]
    for name, size, macs, chosen, eager, traced in rows:
        lines.append(
            f"| {name} {size} px | {macs / 1e6:.1f} M | {'traced' if chosen else 'eager'} "
            f"| {eager:.1f} | {traced:.1f} | {traced / eager:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section("finetune_step", text + "\nRun with `python benchmarks/finetune_step.py`.\n")


if __name__ == "__main__":
    main()
