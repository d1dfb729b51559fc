"""coremltools helpers: import it quietly, inspect a saved ML program, stage an .mlpackage.

coremltools is an optional extra (``edgekit[ios]``), imported only inside these functions.
Core ML predictions run only on Apple platforms; elsewhere a saved package is checked by
reading its spec: the image input, the pre-processing operations coremltools inserted after it
(``<input>__scaled__`` = mul, ``<input>__biased__`` = add) and the ``classify`` operation's
class labels.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._native import capture_native_stderr
from edgekit.errors import RuntimeUnavailableError

INSTALL_HINT = "pip install 'edgekit[ios]' (coremltools)"


def import_coremltools() -> Any:
    """The ``coremltools`` module.

    Raises:
        RuntimeUnavailableError: coremltools is not installed.
    """
    try:
        with quiet():
            import coremltools as ct
    except ImportError as err:
        raise RuntimeUnavailableError(f"coremltools is not installed; {INSTALL_HINT}") from err
    return ct


@contextmanager
def quiet() -> Iterator[Any]:
    """Hold back coremltools' warnings and progress bars; yield the captured text.

    At import it warns about the scikit-learn and TensorFlow versions it was not tested with
    and, off macOS, about its missing native framework; converting draws tqdm bars. They
    would interleave with the CLI's output; the text is kept for a failure's log.
    """
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with capture_native_stderr() as captured:
            yield captured
    finally:
        logger.setLevel(level)


def inspect_spec(spec: Any) -> dict[str, Any]:
    """What a Core ML spec holds: its first input, image pre-processing and class labels.

    Args:
        spec: a ``Model_pb2.Model`` (``coremltools.utils.load_spec``).

    Returns:
        ``{"input": {"name", "type"[, "color", "height", "width"]}, "scale", "bias",
        "labels"}``; scale 1 and bias [0] when coremltools left those operations out (it
        does for the identity), labels [] when the model is not an ML-program classifier.
    """
    desc = spec.description.input[0]
    kind = desc.type.WhichOneof("Type")
    summary: dict[str, Any] = {"input": {"name": desc.name, "type": kind}}
    if kind == "imageType":
        img = desc.type.imageType
        summary["input"].update(
            color=type(img).ColorSpace.Name(img.colorSpace), height=img.height, width=img.width
        )
    scale = 1.0
    bias = [0.0]
    labels: list[str] = []
    if spec.WhichOneof("Type") == "mlProgram":
        fn = spec.mlProgram.functions["main"]
        ops = list(fn.block_specializations[fn.opset].operations)
        consts = {
            op.outputs[0].name: _values(op.attributes["val"]) for op in ops if op.type == "const"
        }

        def argument(op: Any, key: str) -> list[Any]:
            arg = op.inputs[key].arguments[0]
            return consts.get(arg.name, []) if arg.name else _values(arg.value)

        for op in ops:
            out = op.outputs[0].name if op.outputs else ""
            if op.type == "mul" and out == f"{desc.name}__scaled__":
                scale = float(argument(op, "y")[0])
            elif op.type == "add" and out == f"{desc.name}__biased__":
                bias = [float(v) for v in argument(op, "y")]
            elif op.type == "classify":
                labels = [str(v) for v in argument(op, "classes")]
    summary.update(scale=scale, bias=bias, labels=labels)
    return summary


def _values(value: Any) -> list[Any]:
    """Flat Python values of a MIL ``Value`` proto (a tensor, or a list of scalars)."""
    imm = value.immediateValue
    which = imm.WhichOneof("value")
    if which == "list":
        return [v for item in imm.list.values for v in _values(item)]
    if which != "tensor":
        return []
    tensor = imm.tensor
    kind = tensor.WhichOneof("value")
    if kind is None:
        return []
    if kind == "bytes":  # float16 constants are stored as raw bytes
        return np.frombuffer(tensor.bytes.values, dtype=np.float16).astype(float).tolist()
    return [v.decode() if isinstance(v, bytes) else v for v in getattr(tensor, kind).values]


@contextmanager
def staged_package(final: Path) -> Iterator[Path]:
    """Yield a path to build ``final`` (an ``.mlpackage``) at; rename it into place on success.

    The build happens in a hidden folder beside ``final`` (same file system, so the rename is
    atomic); on an exception it is removed and ``final`` is left as it was. An existing
    ``final`` is replaced only after the new one is complete.
    """
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        built = stage / final.name
        yield built
        old = None
        if final.exists():
            old = stage / f"old-{os.getpid()}"
            os.replace(final, old)
        try:
            os.replace(built, final)
        except BaseException:
            if old is not None:
                os.replace(old, final)
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
