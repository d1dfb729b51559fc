"""NetAdapt's pure parts: the resource-reduction schedule, per-iteration targets, seeds, and
the search for the fewest channels to remove from one group."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping

Values = Mapping[str, float]


def resource_reduction(r0: float, iteration: int, init_fraction: float, decay: float) -> float:
    """ΔR_i, the reduction asked of iteration ``i`` (counted from 1).

    ``ΔR_i = R_0 · init_fraction · decay^(i-1)``: the first iteration removes
    ``init_fraction`` of the starting resource, each later one ``decay`` times less than
    the one before (the paper's schedule: large steps while the network has slack, smaller
    ones as it gets tight).

    Raises:
        ValueError: ``iteration`` < 1.
    """
    if iteration < 1:
        raise ValueError(f"iterations are counted from 1; got {iteration}")
    return float(r0) * float(init_fraction) * float(decay) ** (iteration - 1)


def iteration_target(budget: float, previous: float, reduction: float) -> float:
    """The resource an iteration's proposals must reach: ``max(budget, previous - ΔR)``."""
    return max(float(budget), float(previous) - float(reduction))


def reduction_schedule(r0: float, init_fraction: float, decay: float, n: int) -> list[float]:
    """``[ΔR_1, ..., ΔR_n]`` (see :func:`resource_reduction`)."""
    return [resource_reduction(r0, i, init_fraction, decay) for i in range(1, n + 1)]


def derive_seed(seed: int, *parts: object) -> int:
    """A seed for one random choice, fixed by the run's seed and what the choice is for
    (iteration and group), so that it does not depend on which worker makes it or when."""
    text = ":".join(str(p) for p in (seed, *parts))
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def meets(values: Values, targets: Values) -> bool:
    """Every targeted resource is at or under its target."""
    return all(values[name] <= target for name, target in targets.items())


def largest_feasible(
    n: int,
    evaluate: Callable[[int], Values | None],
    targets: Values,
    top: Values,
) -> tuple[int, Values] | None:
    """The largest index in ``[0, n)`` whose values meet every target.

    Index ``i`` stands for a network keeping ``i + 1`` units of a channel group; index ``n``
    is the network as it is (values ``top``), which does not meet the targets. Values grow
    with the index. ``evaluate`` returns None where a network cannot be evaluated (a layer
    outside the latency table): such an index counts as not meeting the targets, so the
    answer is always an index that was evaluated and met them.

    The search is a bracketed interpolation (linear in each binding resource, as a
    resource is close to linear in one group's channel count), with a bisection step
    whenever an interpolation step fails to halve the bracket: a few evaluations when the
    resource is close to linear, never more than about twice a bisection's.

    Returns:
        ``(index, values)``, or None when even index 0 does not meet the targets.
    """
    values: dict[int, Values | None] = {n: top}
    lo: int | None = None  # largest index known to meet the targets
    floor = -1  # indices at or below it could not be evaluated
    hi = n  # smallest index known not to meet them
    interpolate = False
    while True:
        low = lo if lo is not None else floor
        width = hi - low
        if width <= 1:
            break
        if lo is None:
            i = 0 if floor < 0 else (floor + hi) // 2
        elif interpolate:
            i = _interpolated_index(lo, hi, values, targets)
        else:
            i = (lo + hi) // 2
        i = min(max(i, low + 1), hi - 1)
        found = evaluate(i)
        values[i] = found
        if found is not None and meets(found, targets):
            lo = i
        elif found is None and lo is None:
            floor = i
        else:
            hi = i
        new_width = hi - (lo if lo is not None else floor)
        # Interpolate while it pays; after a step that did not halve the bracket, bisect once.
        interpolate = lo is not None and (not interpolate or new_width * 2 <= width)
    if lo is None:
        return None
    found = values[lo]
    assert found is not None
    return lo, found


def _interpolated_index(
    lo: int, hi: int, values: Mapping[int, Values | None], targets: Values
) -> int:
    low, high = values[lo], values[hi]
    if low is None or high is None:
        return (lo + hi) // 2
    crossings = []
    for name, target in targets.items():
        a, b = low[name], high[name]
        if b <= target or b == a:
            continue  # this resource does not bind inside the bracket
        crossings.append(lo + (hi - lo) * (target - a) / (b - a))
    if not crossings:
        return (lo + hi) // 2
    return math.floor(min(crossings))
