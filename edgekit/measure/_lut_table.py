"""A profile's entries indexed for look-up, and interpolation between measured neighbours."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgekit.measure._lut_grid import LayerKey, ModelOp

# Largest extrapolation outside the measured neighbours, as a ratio of work.
MAX_EXTRAPOLATION = 1.5


@dataclass
class LayerEstimate:
    """One op's share of a prediction."""

    name: str
    key: str
    ms: float
    source: str  # exact | interpolated | extrapolated
    neighbours: list[str] = field(default_factory=list)


class LutTable:
    """A profile's entries, indexed for exact look-up and by interpolation family."""

    def __init__(self, profile: dict[str, Any]) -> None:
        self.exact: dict[LayerKey, float] = {}
        self.families: dict[tuple[Any, ...], list[tuple[LayerKey, float]]] = {}
        for e in profile["entries"]:
            key = LayerKey.from_dict(e)
            self.exact[key] = float(e["ms"])
        for key, ms in self.exact.items():
            self.families.setdefault(key.family, []).append((key, ms))

    def estimate(self, key: LayerKey) -> tuple[float, str, list[LayerKey]] | None:
        """(ms, ``exact``/``interpolated``/``extrapolated``, neighbours used), or None."""
        if key in self.exact:
            return self.exact[key], "exact", []
        candidates = self.families.get(key.family, [])
        if key.op == "depthwise":  # a depthwise's channels are one number
            candidates = [(k, ms) for k, ms in candidates if k.cout // k.cin == key.cout // key.cin]
        if not candidates:
            return None
        return _interpolate(key, candidates)


def _channel_distance(a: LayerKey, b: LayerKey) -> float:
    return abs(math.log(a.cin / b.cin)) + abs(math.log(a.cout / b.cout))


def _interpolate(
    key: LayerKey, candidates: list[tuple[LayerKey, float]]
) -> tuple[float, str, list[LayerKey]] | None:
    """Linear in work between the nearest neighbour below and the nearest above.

    "Nearest" is by channel counts (log scale), so a 1x1 conv 48->96 is estimated from
    40->80 and 56->112 rather than from 8->480. With neighbours on one side only the nearest
    is scaled by the work ratio, up to MAX_EXTRAPOLATION.
    """
    work = key.work
    below = [(k, ms) for k, ms in candidates if k.work <= work]
    above = [(k, ms) for k, ms in candidates if k.work >= work]
    if below and above:
        lo = min(below, key=lambda c: (_channel_distance(key, c[0]), -c[0].work))
        hi = min(above, key=lambda c: (_channel_distance(key, c[0]), c[0].work))
        if hi[0].work == lo[0].work:
            return (lo[1] + hi[1]) / 2, "interpolated", [lo[0], hi[0]]
        t = (work - lo[0].work) / (hi[0].work - lo[0].work)
        return lo[1] + t * (hi[1] - lo[1]), "interpolated", [lo[0], hi[0]]
    side = below or above
    near = min(side, key=lambda c: (_channel_distance(key, c[0]), abs(c[0].work - work)))
    ratio = work / max(1, near[0].work)
    if not (1 / MAX_EXTRAPOLATION <= ratio <= MAX_EXTRAPOLATION):
        return None
    return near[1] * ratio, "extrapolated", [near[0]]


def sum_ops(
    ops: list[ModelOp], table: LutTable
) -> tuple[float, list[LayerEstimate], list[tuple[ModelOp, str]]]:
    """Sum of the raw (unscaled) entries of ``ops``; estimates; ops without one and why."""
    per_layer: list[LayerEstimate] = []
    missing: list[tuple[ModelOp, str]] = []
    for op in ops:
        found = table.estimate(op.key) if op.key is not None else None
        if found is None:
            missing.append((op, op.reason or f"no entry or neighbours for {op.key}"))
            continue
        ms, source, neighbours = found
        per_layer.append(
            LayerEstimate(op.name, str(op.key), ms, source, [str(n) for n in neighbours])
        )
    return sum(e.ms for e in per_layer), per_layer, missing
