"""Recipe step ``channels``: structured channel pruning to a MAC target, then fine-tuning."""

from __future__ import annotations

from typing import Any

from edgekit.compress._steps import Option, StepContext, register_step
from edgekit.compress.channels import CRITERIA, count_macs, prune_channels, uniform_channel_plan


def plan_for_macs(model: Any, macs_fraction: float, multiple_of: int = 1) -> tuple[dict, float]:
    """The uniform channel plan whose pruned model keeps about ``macs_fraction`` of the MACs.

    MACs fall roughly with the square of the kept channel share (both a layer's inputs and
    outputs shrink), so the share to remove is found by bisection on the real count.

    Returns:
        The plan, and the MAC fraction the pruned model really keeps.
    """
    total = count_macs(model)
    lo, hi = 0.0, 0.95
    best: tuple[dict, float] | None = None
    for _ in range(14):
        mid = (lo + hi) / 2
        plan = uniform_channel_plan(model, mid, multiple_of=multiple_of)
        kept = count_macs(prune_channels(model, plan)) / total
        if best is None or abs(kept - macs_fraction) < abs(best[1] - macs_fraction):
            best = (plan, kept)
        if kept > macs_fraction:
            lo = mid
        else:
            hi = mid
        if abs(kept - macs_fraction) < 0.005:
            break
    assert best is not None
    return best


@register_step(
    "channels",
    options={
        "macs": Option(float, 0.5, "share of the MACs to keep", min=0.05, max=1.0),
        "criterion": Option(str, "l1", "channel importance", choices=CRITERIA),
        "multiple_of": Option(int, 1, "round kept channel counts to this multiple", min=1, max=64),
        "epochs": Option(int, 10, "fine-tuning epochs after pruning", min=0, max=1000),
        "learning_rate": Option(float, 1e-3, "fine-tuning learning rate", min=1e-7, max=1.0),
    },
    help="remove whole channels (physically smaller, faster model), then fine-tune",
)
def channels_step(
    model: Any,
    ctx: StepContext,
    *,
    macs: float,
    criterion: str,
    multiple_of: int,
    epochs: int,
    learning_rate: float,
) -> Any:
    """Prune channels uniformly until about ``macs`` of the MACs remain, then fine-tune."""
    before = count_macs(model)
    plan, kept = plan_for_macs(model, macs, multiple_of)
    pruned = prune_channels(model, plan, criterion)
    ctx.say(f"channels: {before / 1e6:.2f}M -> {count_macs(pruned) / 1e6:.2f}M MACs ({kept:.2f})")
    ctx.fine_tune(pruned, epochs, learning_rate=learning_rate)
    ctx.state["macs_kept"] = kept
    return pruned
