"""Full-int8 TFLite -> Coral Edge TPU: runs ``edgetpu_compiler`` (a system install).

The compiler is an x86-64 Debian/Ubuntu binary from Coral's apt repository (package
``edgetpu-compiler``, https://coral.ai/docs/edgetpu/compiler/); it is detected, never
required. Without it :class:`EdgeTPUConverter` raises RuntimeUnavailableError and the
full-int8 model of the previous step is what a user compiles elsewhere, with the command
:func:`edgetpu_compiler_command` gives.

The model is refused before compiling when it is not full-int8 (the compiler would "succeed"
and map nothing). The compiler writes into a staging folder inside ``out_dir``; the compiled
model is renamed into place only when the compiler succeeded, and its stdout/stderr and
operation log are kept as ``<stem>_edgetpu.log`` whether it succeeded or not.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgekit._io import write_bytes_atomic
from edgekit.converters._base import Artifact, Converter, ConvertOptions, register_converter
from edgekit.errors import BadInputError, ConversionError, RuntimeUnavailableError
from edgekit.targets._edgetpu import DEFAULT_MIN_RUNTIME_VERSION, EdgeTPUReport, analyze_edgetpu

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (
    "install Coral's apt package edgetpu-compiler (x86-64 Debian/Ubuntu only, "
    "https://coral.ai/docs/edgetpu/compiler/)"
)
DEFAULT_TIMEOUT_S = 600.0
_FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")

# Lines of the compiler's summary (compiler 2.x-16.x) -> details key.
_SUMMARY_PATTERNS: dict[str, tuple[str, type]] = {
    "compiler_version": (r"Edge TPU Compiler version (\S+)", str),
    "compile_ms": (r"Model compiled successfully in (\d+) ms", int),
    "ops_total": (r"Total number of operations: (\d+)", int),
    "ops_on_edgetpu": (r"Number of operations that will run on Edge TPU: (\d+)", int),
    "ops_on_cpu": (r"Number of operations that will run on CPU: (\d+)", int),
    "edgetpu_subgraphs": (r"Number of Edge TPU subgraphs: (\d+)", int),
    "on_chip_memory_used": (r"On-chip memory used for caching model parameters: (\S+)", str),
    "on_chip_memory_remaining": (
        r"On-chip memory remaining for caching model parameters: (\S+)",
        str,
    ),
    "off_chip_memory_used": (
        r"Off-chip memory used for streaming uncached model parameters: (\S+)",
        str,
    ),
}
# A row of the operator table: "CONV_2D                        35         Mapped to Edge TPU"
_TABLE_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$", re.MULTILINE)
_MAPPED_STATUS = "Mapped to Edge TPU"


def find_edgetpu_compiler() -> str | None:
    """Path of ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which(COMPILER)


def edgetpu_compiler_command(
    model: str | Path,
    out_dir: str | Path,
    min_runtime: int = DEFAULT_MIN_RUNTIME_VERSION,
    compiler: str = COMPILER,
) -> list[str]:
    """The argv that compiles ``model`` into ``out_dir``.

    ``-s`` prints the operator table, ``-m`` sets the lowest Edge TPU runtime version the
    output must run on, ``-o`` the output folder (flags of https://coral.ai/docs/edgetpu/compiler/).

    Args:
        model: the full-int8 .tflite file.
        out_dir: folder the compiler writes ``<model stem>_edgetpu.tflite`` and its log to.
        min_runtime: Edge TPU runtime version to compile for.
        compiler: the compiler executable (name or path).

    Returns:
        The argument list, ready for ``subprocess.run`` or ``shlex.join``.
    """
    return [compiler, "-s", "-m", str(int(min_runtime)), "-o", str(out_dir), str(model)]


def parse_compiler_output(text: str) -> dict[str, Any]:
    """The summary numbers and operator table of an ``edgetpu_compiler -s`` run.

    When every op maps, the compiler prints no "will run on" lines; the counts are then
    derived from the operator table and the total.

    Args:
        text: the compiler's stdout (optionally followed by its operation log).

    Returns:
        A dict with the keys of the summary that were found and ``operations``, a list of
        ``{op, count, status}`` rows (empty when the table is absent).
    """
    found: dict[str, Any] = {}
    for key, (pattern, cast) in _SUMMARY_PATTERNS.items():
        m = re.search(pattern, text)
        if m:
            found[key] = cast(m.group(1))
    rows = [
        {"op": m.group(1), "count": int(m.group(2)), "status": m.group(3)}
        for m in _TABLE_ROW.finditer(text)
    ]
    found["operations"] = rows
    if rows and "ops_on_edgetpu" not in found:
        found["ops_on_edgetpu"] = sum(r["count"] for r in rows if r["status"] == _MAPPED_STATUS)
    if "ops_on_cpu" not in found and "ops_on_edgetpu" in found:
        total = found.get("ops_total", sum(r["count"] for r in rows))
        found["ops_on_cpu"] = total - found["ops_on_edgetpu"]
    return found


def _source_path(src: Any) -> Path:
    if isinstance(src, Artifact):
        return Path(src.path)
    if isinstance(src, (str, os.PathLike)):
        return Path(src)
    raise BadInputError(
        f"the edgetpu converter takes a tflite_int8 artifact or a .tflite path, got "
        f"{type(src).__name__}; run the tflite_int8 converter first"
    )


def _refuse_non_int8(model: Path, report: EdgeTPUReport) -> None:
    """Raise BadInputError naming the first op with non-int8 tensors, if there is one."""
    bad_ops = [
        op
        for op in report.ops
        if not op.edge and any(p.startswith("not int8") for p in op.problems)
    ]
    if not bad_ops:
        return
    first = bad_ops[0]
    tensors = [t for t in first.inputs + first.outputs if t.dtype in _FLOAT_TYPES] or [
        t for t in first.inputs + first.outputs if t.dtype not in ("int8", "uint8")
    ]
    named = ", ".join(f"{t.dtype} '{t.name}'" for t in tensors[:3])
    more = f" and {len(tensors) - 3} more" if len(tensors) > 3 else ""
    raise BadInputError(
        f"'{model}' is not a full-int8 model: {len(bad_ops)} of {report.ops_total} ops use "
        f"non-int8 tensors, the first is op {first.index} {first.op} ({named}{more}); the Edge "
        "TPU compiler takes int8/uint8 models only: convert with the tflite_int8 converter "
        "(with calibration data) first"
    )


def _option(
    options: ConvertOptions, key: str, default: float, minimum: float, integer: bool = False
) -> float:
    value = options.extra.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise BadInputError(
            f"edgetpu option {key}={value!r} is not valid; expected {kind} >= {minimum:g}"
        )
    return value


def _text(stream: Any) -> str:
    if stream is None:
        return ""
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")
    return str(stream)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


@register_converter
class EdgeTPUConverter(Converter):
    """Compile a full-int8 .tflite for the Coral Edge TPU with ``edgetpu_compiler``.

    Options (``options.extra``): ``min_runtime_version`` (int, default 14) and
    ``timeout_s`` (seconds, default 600).
    """

    format = "edgetpu"
    source = "tflite_int8"
    suffix = "_edgetpu.tflite"
    runtime = "edgetpu"
    precision = "int8"
    quantized = True
    description = "Coral Edge TPU: the full-int8 TFLite model compiled by edgetpu_compiler"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if find_edgetpu_compiler() is None:
            return f"{COMPILER} not found on PATH"
        return None

    def convert(self, src: Any, out_dir: Path, options: ConvertOptions) -> Artifact:
        """Compile ``src`` into ``out_dir/<stem>_edgetpu.tflite``.

        Args:
            src: the Artifact of the tflite_int8 step, or the path of a full-int8 .tflite.
            out_dir: output folder (created if missing).
            options: ``stem`` names the output; ``extra`` holds ``min_runtime_version`` and
                ``timeout_s``.

        Returns:
            The compiled Artifact; ``details`` holds the compiler's summary, the analysis of
            the input and the log path.

        Raises:
            BadInputError: ``src`` is missing, not a TFLite model, or not full-int8.
            RuntimeUnavailableError: ``edgetpu_compiler`` is not on PATH.
            ConversionError: the compiler failed, timed out or wrote no model (log kept).
        """
        model = _source_path(src).absolute()
        min_runtime = int(
            _option(options, "min_runtime_version", DEFAULT_MIN_RUNTIME_VERSION, 10, integer=True)
        )
        timeout = float(_option(options, "timeout_s", DEFAULT_TIMEOUT_S, minimum=1))
        report = analyze_edgetpu(model, min_runtime_version=min_runtime)
        _refuse_non_int8(model, report)

        out_dir = Path(out_dir)
        compiler = find_edgetpu_compiler()
        if compiler is None:
            manual = shlex.join(edgetpu_compiler_command(model, out_dir, min_runtime))
            raise RuntimeUnavailableError(
                f"{COMPILER} not found on PATH; {INSTALL_HINT}, or compile the full-int8 "
                f"model on such a machine: {manual}"
            )

        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / f"{options.stem}{self.suffix}"
        log_path = out_dir / f"{options.stem}_edgetpu.log"
        stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=out_dir))
        try:
            argv = edgetpu_compiler_command(model, stage, min_runtime, compiler=compiler)
            stdout, stderr, error = self._run(argv, stage, timeout)
            op_logs = "".join(
                f"\n--- operation log {p.name} ---\n{p.read_text(errors='replace')}"
                for p in sorted(stage.glob("*.log"))
            )
            text = f"$ {shlex.join(argv)}\n{stdout}"
            if stderr:
                text += f"\n--- stderr ---\n{stderr}"
            write_bytes_atomic(log_path, (text + op_logs).encode())
            produced = stage / f"{model.stem}{self.suffix}"
            if error is None and not produced.is_file():
                error = f"it exited 0 but wrote no {produced.name}"
            if error is not None:
                raise ConversionError(
                    f"{COMPILER} failed on '{model}': {error} (compiler log: {log_path})"
                )
            os.replace(produced, final)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

        first = report.first_unmapped
        first_unmapped = None
        if first is not None:
            first_unmapped = {"op": first.op, "index": first.index, "reason": first.reason}
        summary = parse_compiler_output(stdout)
        if not summary["operations"]:  # no -s table on stdout: take it from the operation log
            summary["operations"] = parse_compiler_output(op_logs)["operations"]
        details: dict[str, Any] = {
            "compiler": compiler,
            # what to run by hand for the same result (the run itself used a staging folder)
            "command": edgetpu_compiler_command(model, out_dir, min_runtime),
            "min_runtime_version": min_runtime,
            "log": str(log_path),
            **summary,
            "analysis": {  # edgekit's own prediction, from the input model
                "ops_total": report.ops_total,
                "ops_mapped": report.ops_mapped,
                "macs_mapped_fraction": report.macs_mapped_fraction,
                "first_unmapped": first_unmapped,
            },
        }
        if summary.get("ops_on_cpu"):
            log.warning(
                "%s: %s of %s ops will run on the CPU (see %s)",
                final.name,
                summary["ops_on_cpu"],
                summary.get("ops_total", "?"),
                log_path,
            )
        log.info("wrote %s", final)
        return Artifact(
            format=self.format,
            path=final,
            runtime=self.runtime,
            precision=self.precision,
            files=[final],
            details=details,
        )

    @staticmethod
    def _run(argv: list[str], cwd: Path, timeout: float) -> tuple[str, str, str | None]:
        """Run the compiler: (stdout, stderr, error message or None)."""
        try:
            proc = subprocess.run(
                argv, cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            return (
                _text(err.stdout),
                _text(err.stderr),
                f"no result within {timeout:g} s; raise options.extra['timeout_s']",
            )
        except OSError as err:  # e.g. an x86-64 binary on an ARM host
            return "", str(err), f"it could not be started ({err})"
        if proc.returncode != 0:
            last = _last_line(proc.stderr) if proc.stderr.strip() else _last_line(proc.stdout)
            error = f"exit status {proc.returncode}: {last}"
            return proc.stdout, proc.stderr, error
        return proc.stdout, proc.stderr, None
