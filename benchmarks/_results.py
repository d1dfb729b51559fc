"""Write one benchmark's section of benchmarks/RESULTS.md, leaving the others as they are."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Each section is rewritten by the script it names; numbers in one section were measured\n"
    "side by side in one run of that script.\n"
)


def host_line() -> str:
    from edgekit.measure._bench import host_description
    from edgekit.measure.lut import best_int8_isa

    cpu = host_description()["cpu"]

    # The model name alone does not tell hosts apart ("AMD EPYC" with AVX-512 VNNI and with
    # AVX2 only ran int8 MobileNets 2.2-3.6x apart): the best int8 instruction set does.
    isa = best_int8_isa()
    return f"{cpu}{f' ({isa})' if isa else ''}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section between this script's markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".RESULTS.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, RESULTS)
    return RESULTS
