"""Reference tools the benchmarks compare edgekit's figures with (installed next to Python)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def tool(name: str) -> str:
    """Path of the console script ``name``: on PATH, else beside this interpreter."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def litert_benchmark(path: Path, threads: int, runs: int, warmup: int) -> float:
    """Median latency in ms of ``path`` by LiteRT's own benchmark tool (``litert-benchmark``,
    shipped with ai-edge-litert), on the CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run(
            [
                tool("litert-benchmark"),
                "--model", str(path),
                "--num_threads", str(threads),
                "--num_runs", str(runs),
                "--warmup_runs", str(warmup),
                "--use_cpu",
                "--result_json", str(out),
            ],
            check=True,
            capture_output=True,
            text=True,
        )  # fmt: skip
        return float(json.loads(out.read_text())["latency"]["median_ms"])
