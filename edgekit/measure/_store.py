"""The results store: every measurement, keyed by artifact sha256, device, runtime, settings."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    artifact_path TEXT,
    device TEXT NOT NULL,
    runtime TEXT NOT NULL,
    runtime_version TEXT,
    settings TEXT NOT NULL,
    p50_ms REAL,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_key
    ON measurements (artifact_sha256, device, runtime, settings);
"""


def default_db() -> Path:
    """``$EDGEKIT_CACHE_DIR/results.sqlite``, else ``~/.cache/edgekit/results.sqlite``."""
    env = os.environ.get("EDGEKIT_CACHE_DIR")
    base = (
        Path(env)
        if env
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"
    )
    return base / "results.sqlite"


def _connect(db: str | Path | None) -> sqlite3.Connection:
    path = Path(db) if db else default_db()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.executescript(SCHEMA)
    return conn


def record_measurement(
    result: dict[str, Any], device: str = "local", db: str | Path | None = None
) -> int:
    """Store one bench result (the JSON of ``edgekit bench``); returns its row id."""
    runtime = result.get("runtime", {})
    settings = {
        "runs": result.get("runs"),
        "warmup": result.get("warmup"),
        "threads": runtime.get("threads"),
        "precision": runtime.get("inference_precision"),
        "device": runtime.get("device"),
    }
    with _connect(db) as conn:
        cur = conn.execute(
            "INSERT INTO measurements (created, artifact_sha256, artifact_path, device, runtime, "
            "runtime_version, settings, p50_ms, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                time.time(),
                result["artifact"]["sha256"],
                result["artifact"].get("path"),
                device,
                runtime.get("name", "unknown"),
                runtime.get("version"),
                json.dumps(settings, sort_keys=True),
                result.get("latency_ms", {}).get("p50"),
                json.dumps(result, sort_keys=True),
            ),
        )
        return int(cur.lastrowid or 0)


def list_measurements(
    db: str | Path | None = None,
    sha256: str | None = None,
    device: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Stored measurements, newest first, optionally for one artifact hash (prefix) or device."""
    query = "SELECT id, created, artifact_sha256, artifact_path, device, runtime, runtime_version, settings, p50_ms FROM measurements"
    clauses, args = [], []
    if sha256:
        clauses.append("artifact_sha256 LIKE ?")
        args.append(sha256 + "%")
    if device:
        clauses.append("device = ?")
        args.append(device)
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    query += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    with _connect(db) as conn:
        rows = conn.execute(query, args).fetchall()
    return [
        {
            "id": r[0],
            "created": r[1],
            "artifact_sha256": r[2],
            "artifact_path": r[3],
            "device": r[4],
            "runtime": r[5],
            "runtime_version": r[6],
            "settings": json.loads(r[7]),
            "p50_ms": r[8],
        }
        for r in rows
    ]
