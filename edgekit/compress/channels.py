"""Structured channel (filter) pruning that physically removes channels.

``prunable_groups(model)`` finds the sets of channels that must be pruned together (see
:mod:`edgekit.compress._graph`): a residual add ties the channels of every tensor it adds, a
depthwise conv and its batch norm follow their input, a concatenation shifts the offsets of
its parts, a grouped conv and a channel shuffle need the same positions kept in every group.
``prune_channels(model, plan)`` keeps, in each named group, the channels with the largest
filter norms (or the ones given) and returns a new, smaller functional model with the same
layer names, the kept weights, and the original input and output shapes.
``PlannedChannels(model).layer_channels(plan)`` says what channel counts a plan leaves in
every layer without building that model (a search prices many plans this way).

A group is named after its first producing layer (``block3_expand``); its ``channel_count``
and ``divisor`` are counted on that layer's filters. Where coupling ties several channels of
that layer together (ShuffleNet), one unit of ``divisor`` channels is kept or removed at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from edgekit.compress._graph import ChannelGraph, Component
from edgekit.compress._rebuild import rebuild_model
from edgekit.errors import BadInputError

log = logging.getLogger(__name__)

CRITERIA = ("l1", "l2")
Plan = Mapping[str, int | Sequence[int]]


@dataclass(frozen=True)
class PrunableGroup:
    """Channels that are pruned together.

    Attributes:
        name: the group's name, that of its first producing layer (``block3_expand``).
        producers: conv / dense layers whose output channels belong to the group (for a
            residual stage: every conv whose output is added).
        consumers: layers that read the group's channels (batch norms, depthwise convs, adds,
            concatenations, the next convs).
        channel_count: output channels of the first producer.
        min_channels: the fewest channels a plan may keep (one unit).
        divisor: kept counts must be a multiple of this: the channels of the first producer
            that coupling ties together (1 unless grouped convs and shuffles couple them).
    """

    name: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    channel_count: int
    min_channels: int
    divisor: int


@dataclass
class _Group:
    info: PrunableGroup
    component: Component
    # For every channel of the first producer, the root of its class.
    channel_class: np.ndarray


class _Analysis:
    """The graph of a model and its prunable groups, by name."""

    def __init__(self, model: Any) -> None:
        self.graph = ChannelGraph(model)
        self.groups: dict[str, _Group] = {}
        self.excluded: dict[str, str] = {}  # producer name -> why it cannot be pruned
        for comp in self.graph.components:
            reason = comp.fixed or self._unit_problem(comp)
            if reason:
                for producer in comp.producers:
                    self.excluded[producer] = reason
                continue
            name = comp.producers[0]
            classes = self.graph.roots(self.graph.producers[name])
            count = len(classes)
            divisor = count // len(comp.classes)
            self.groups[name] = _Group(
                PrunableGroup(
                    name=name,
                    producers=tuple(comp.producers),
                    consumers=tuple(comp.consumers),
                    channel_count=count,
                    min_channels=divisor,
                    divisor=divisor,
                ),
                comp,
                classes,
            )

    def _unit_problem(self, comp: Component) -> str | None:
        first = self.graph.producers[comp.producers[0]]
        _, counts = np.unique(self.graph.roots(first), return_counts=True)
        if len(comp.classes) < 2 and len(first) == 1:
            return "it has a single channel"
        if len(comp.classes) < 2:
            return (
                f"its {len(first)} channels are coupled into one unit (a grouped conv reads a "
                "channel shuffle of them), so none can be removed without all"
            )
        if len(counts) != len(comp.classes) or len(set(counts.tolist())) != 1:
            return "its coupled channel sets have uneven sizes"
        return None

    def group(self, name: Any) -> _Group:
        if isinstance(name, str) and name in self.groups:
            return self.groups[name]
        if isinstance(name, str):
            for group in self.groups.values():
                if name in group.info.producers:
                    raise BadInputError(
                        f"layer '{name}' is pruned as part of group '{group.info.name}' "
                        f"(coupled with {', '.join(group.info.producers)}); name that group"
                    )
            if name in self.excluded:
                raise BadInputError(f"layer '{name}' cannot be pruned: {self.excluded[name]}")
        names = list(self.groups)
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} groups)" if len(names) > 10 else "")
        raise BadInputError(f"unknown prunable group {name!r}; known groups: {shown}")


def prunable_groups(model: Any) -> list[PrunableGroup]:
    """The channel groups of ``model`` that can be pruned, in model order.

    Groups whose channels cannot be removed (model inputs and outputs, layers the analysis
    cannot see through, units that coupling fuses into one) are left out.

    Args:
        model: a functional ``tf_keras`` model with static shapes, each layer used once.

    Returns:
        One :class:`PrunableGroup` per group.

    Raises:
        BadInputError: the model is not functional, nests a model, shares a layer or has
            dynamic shapes.
    """
    return [g.info for g in _Analysis(model).groups.values()]


def channel_importance(model: Any, criterion: str = "l1") -> dict[str, np.ndarray]:
    """The importance of every channel of every prunable group.

    A channel's score is the norm (L1: sum of absolute values, L2: Euclidean) of its
    producing filter, summed over every filter coupled to it (the other producers of a
    residual stage, the other members of its unit).

    Args:
        model: see :func:`prunable_groups`.
        criterion: ``"l1"`` or ``"l2"``.

    Returns:
        Group name -> float64 array of ``channel_count`` scores, indexed by the channels
        of the group's first producer; channels of one unit share the unit's score.

    Raises:
        BadInputError: unknown criterion, or see :func:`prunable_groups`.
    """
    _check_criterion(criterion)
    analysis = _Analysis(model)
    scores = _class_scores(analysis, criterion)
    return {
        name: np.array([scores[int(r)] for r in group.channel_class], dtype=np.float64)
        for name, group in analysis.groups.items()
    }


def prune_channels(model: Any, plan: Plan, criterion: str = "l1") -> Any:
    """Remove channels and return a new, smaller model.

    Args:
        model: see :func:`prunable_groups`; it is not modified.
        plan: group name -> how many channels to keep (the ones with the largest scores,
            see :func:`channel_importance`), or the indices of the first producer's channels
            to keep (whole units). Groups not named keep every channel.
        criterion: ``"l1"`` or ``"l2"``, used for groups given as a count.

    Returns:
        A new functional ``tf_keras`` model: same name, layer names, input and output
        shapes; conv / dense / batch-norm / depthwise weights of the kept channels. It has
        no Lambda layers (saves as ``.keras`` and loads in safe mode).

    Raises:
        BadInputError: an unknown group, a count out of range or not a multiple of the
            group's divisor, bad indices, an unknown criterion, or see
            :func:`prunable_groups`.
    """
    _check_criterion(criterion)
    analysis = _Analysis(model)
    return rebuild_model(analysis.graph, _keep_classes(analysis, plan, criterion, {}))


class PlannedChannels:
    """The channel counts a plan leaves in every layer of a model, without building the
    pruned network (which :func:`prune_channels` does, at the cost of a Keras rebuild).

    A search that tries many plans on one network analyses it once here, and asks what each
    plan's layers would look like: that is enough to predict a pruned network's latency
    from a look-up table (see :func:`edgekit.measure.lut.predict_latency`).

    Raises:
        BadInputError: see :func:`prunable_groups`; an unknown criterion.
    """

    def __init__(self, model: Any, criterion: str = "l1") -> None:
        _check_criterion(criterion)
        self.criterion = criterion
        self._analysis = _Analysis(model)
        self._scores: dict[int, float] = {}

    def layer_channels(self, plan: Plan | None = None) -> dict[str, LayerChannels]:
        """Layer name -> the channels of its input and output tensors once ``plan`` (see
        :func:`prune_channels`; None: nothing pruned) is applied.

        Raises:
            BadInputError: as :func:`prune_channels` for a bad plan.
        """
        graph = self._analysis.graph
        keep = _keep_classes(self._analysis, plan or {}, self.criterion, self._scores)
        masks = graph.masks(keep)
        out: dict[str, LayerChannels] = {}
        for step in graph.steps:
            out[step.layer.name] = LayerChannels(
                tuple(int(masks[t].sum()) for t in step.inputs),
                tuple(int(masks[t].sum()) for t in step.outputs),
            )
        return out


@dataclass(frozen=True)
class LayerChannels:
    """The channels (last dimension) of one layer's input and output tensors."""

    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _keep_classes(
    analysis: _Analysis, plan: Plan, criterion: str, scores: dict[int, float]
) -> dict[int, bool]:
    """Class root -> kept, for the classes of the groups ``plan`` names. ``scores`` caches
    the class scores (filled on first need)."""
    if not isinstance(plan, Mapping):
        raise BadInputError(
            f"plan must map group names to channel counts or index lists; got {type(plan).__name__}"
        )
    chosen = {analysis.group(name).info.name: value for name, value in plan.items()}
    keep_class: dict[int, bool] = {}
    for name, value in chosen.items():
        group = analysis.groups[name]
        if isinstance(value, Integral) and not isinstance(value, bool):
            count = _check_count(group.info, int(value))
            if not scores:
                scores.update(_class_scores(analysis, criterion))
            kept = _top_classes(group, scores, count // group.info.divisor)
        else:
            kept = _classes_of_indices(group, value)
        for root in group.component.classes:
            keep_class[root] = root in kept
        log.debug("group %s keeps %d of %d units", name, len(kept), len(group.component.classes))
    return keep_class


def uniform_channel_plan(model: Any, fraction: float, *, multiple_of: int = 1) -> dict[str, int]:
    """A plan that removes the same fraction of channels from every prunable group.

    Args:
        model: see :func:`prunable_groups`.
        fraction: share of channels to remove, in [0, 1).
        multiple_of: round kept counts to a multiple of this too (8 suits most
            accelerators' vector widths); a group smaller than that keeps all its channels.

    Returns:
        Group name -> channels to keep: a multiple of the group's divisor (and of
        ``multiple_of`` where possible), at least its ``min_channels``.

    Raises:
        BadInputError: ``fraction`` or ``multiple_of`` out of range, or see
            :func:`prunable_groups`.
    """
    ok = isinstance(fraction, Real) and not isinstance(fraction, bool) and 0 <= fraction < 1
    if not ok:
        raise BadInputError(f"fraction must be a number in [0, 1); got {fraction!r}")
    if not isinstance(multiple_of, Integral) or isinstance(multiple_of, bool) or multiple_of < 1:
        raise BadInputError(f"multiple_of must be an integer >= 1; got {multiple_of!r}")
    plan = {}
    for group in prunable_groups(model):
        step = math.lcm(group.divisor, int(multiple_of))
        if step > group.channel_count:
            step = group.divisor
        keep = round(group.channel_count * (1.0 - float(fraction)) / step) * step
        plan[group.name] = min(group.channel_count, max(step, group.min_channels, keep))
    return plan


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one inference, by :func:`edgekit.models.count_model`."""
    from edgekit.models import count_model

    return count_model(model).macs


def _check_criterion(criterion: Any) -> None:
    if criterion not in CRITERIA:
        raise BadInputError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")


def _allowed(info: PrunableGroup) -> str:
    steps = f" in steps of {info.divisor}" if info.divisor > 1 else ""
    return f"allowed: {info.min_channels}..{info.channel_count}{steps}"


def _check_count(info: PrunableGroup, count: int) -> int:
    if not info.min_channels <= count <= info.channel_count or count % info.divisor:
        raise BadInputError(f"group '{info.name}' cannot keep {count} channels; {_allowed(info)}")
    return count


def _classes_of_indices(group: _Group, value: Any) -> set[int]:
    info = group.info
    bad = (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence | np.ndarray)
        or not all(isinstance(i, Integral) and not isinstance(i, bool) for i in value)
    )
    if bad:
        raise BadInputError(
            f"group '{info.name}' needs a channel count or a list of channel indices; got {value!r}"
        )
    indices = [int(i) for i in value]
    out_of_range = [i for i in indices if not 0 <= i < info.channel_count]
    if out_of_range or len(set(indices)) != len(indices):
        raise BadInputError(
            f"group '{info.name}' channel indices must be distinct and in "
            f"0..{info.channel_count - 1}; got {sorted(indices)}"
        )
    _check_count(info, len(indices))
    kept = {int(group.channel_class[i]) for i in indices}
    whole = {i for i, r in enumerate(group.channel_class.tolist()) if r in kept}
    if whole != set(indices):
        missing = sorted(whole - set(indices))
        raise BadInputError(
            f"group '{info.name}' keeps channels in units of {info.divisor}; the indices "
            f"given also need {missing[:8]}"
        )
    return kept


def _top_classes(group: _Group, scores: dict[int, float], units: int) -> set[int]:
    classes = sorted(
        group.component.classes,
        key=lambda r: -scores[r],  # stable: ties keep the earlier class
    )
    return set(classes[:units])


def _class_scores(analysis: _Analysis, criterion: str) -> dict[int, float]:
    graph = analysis.graph
    scores: dict[int, float] = {}
    model = graph.model
    for name, elements in graph.producers.items():
        layer = model.get_layer(name)
        # The filters that make the output channels: a separable conv's pointwise kernel.
        kernel = layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel
        kernel = np.asarray(kernel.numpy(), dtype=np.float64)
        filters = kernel.reshape(-1, kernel.shape[-1])
        if criterion == "l1":
            norms = np.abs(filters).sum(axis=0)
        else:
            norms = np.sqrt((filters**2).sum(axis=0))
        for root, norm in zip(graph.roots(elements).tolist(), norms.tolist(), strict=True):
            scores[root] = scores.get(root, 0.0) + norm
    return scores
