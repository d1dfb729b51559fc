"""Capture what native libraries (TensorFlow, LiteRT, OpenVINO) write straight to fd 2.

Their C++ logs bypass Python's sys.stderr, so they would interleave with edgekit's progress
and tables. This sends fd 2 to a temporary file for the duration of a block; the text is kept
so a failing conversion can store it as the tool's log.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    """Text that native code wrote to fd 2 inside a ``capture_native_stderr`` block."""

    def __init__(self) -> None:
        self.text = ""


@contextlib.contextmanager
def capture_native_stderr() -> Iterator[Captured]:
    """Redirect fd 2 to a temporary file inside the block; EDGEKIT_TF_LOGS=1 disables it."""
    captured = Captured()
    if os.environ.get("EDGEKIT_TF_LOGS"):
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            captured.text = buf.read().decode(errors="replace")
