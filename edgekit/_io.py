"""Small file helpers: atomic writes, hashing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def umask() -> int:
    """This process's umask: read where the system shows it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def set_default_mode(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` the mode ``open()`` or ``mkdir()`` would have given it (0666 or 0777
    less the umask). ``mkstemp`` and ``mkdtemp`` create private files and folders (0600,
    0700): renamed into place as they are, a deployed model or its output folder would be
    unreadable to every other user, such as the service that serves it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


@contextmanager
def staged_dir(final: str | Path, replace_if: str | None = None) -> Iterator[Path]:
    """Yield a staging folder beside ``final``; on success rename it to ``final``.

    On any exception the staging folder is removed and ``final`` is left as it was, so an
    interrupted run never leaves a half-written output folder.

    Args:
        final: the output folder to create.
        replace_if: if ``final`` exists and contains this file name (a manifest that edgekit
            wrote), it is replaced; if it exists without it, nothing is touched and
            FileExistsError is raised before any work.
    """
    final = Path(final).absolute()
    if final.exists():
        if final.is_dir() and not any(final.iterdir()):
            pass
        elif not (replace_if and final.is_dir() and (final / replace_if).is_file()):
            raise FileExistsError(str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    set_default_mode(stage, directory=True)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
